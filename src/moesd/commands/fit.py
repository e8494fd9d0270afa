from __future__ import annotations

import numpy as np

from moesd import render
from moesd.atomic_io import write_text_atomic
from moesd.bench.results_file import read_records
from moesd.errors import MoesdError
from moesd.perf.experts import RoutingCurve
from moesd.perf.fit import fit, held_out_error, predicted_speedup, stride_split
from moesd.perf.hardware import resolve_hardware
from moesd.perf.inputs import resolve_model
from moesd.perf.measurements import load_measurements, measurements_from_records
from moesd.perf.step_time import StepContext


def run(measurements: str, target: str | None, draft: str | None, hardware: str | None, tp: int | None,
        verify_convention: str, stride: int | None, skip_bad_lines: bool, output: str | None,
        as_json: bool, load_bound_factor: float = 5.0, routing: str | None = None) -> str:
    if not load_bound_factor >= 1.0:
        raise MoesdError(f"--load-bound-factor must be >= 1, got {load_bound_factor}")
    target_arch = resolve_model(target) if target else None
    defaults = dict(num_experts=target_arch.num_experts if target_arch else None,
                    experts_per_token=target_arch.experts_per_token if target_arch else None)
    curve = None
    if routing is None:
        m = load_measurements(measurements, skip_bad_lines=skip_bad_lines, **defaults)
    else:
        # Only `moesd bench` lines carry routing: keep that routing's points; under the model's own
        # routing, N(t) comes from the distinct-expert curves the points measured instead of Eq. 8.
        records = [r for r in read_records(measurements, skip_bad_lines) if r.get("routing") == routing]
        if not records:
            raise MoesdError(f"{measurements}: no points with routing {routing!r}")
        m = measurements_from_records([(f"{measurements}[{i}]", r) for i, r in enumerate(records)], source=measurements,
                                      **defaults)
        if routing == "model":
            curve = RoutingCurve.merge(int(m.num_experts[0]), int(m.experts_per_token[0]),
                                       [r.get("routing_curve") for r in records], measurements)
    notes = []
    if target_arch is None and "target" in m.context:
        try:
            target_arch = resolve_model(str(m.context["target"]))
        except MoesdError:
            # e.g. a GGUF or an upcycled twin: fit with data-driven bounds instead of byte counts
            notes.append(f"target {m.context['target']!r} has no parseable config: loads bounded by the data only")
    hardware = hardware or m.context.get("hardware")
    if hardware is None:
        raise MoesdError("fit needs --hardware (its ridge point places G's knee), or a 'hardware' column")
    tp = tp or int(m.context.get("tp", 1))
    hw = resolve_hardware(str(hardware))
    draft_arch = resolve_model(draft) if draft else None
    ctx = StepContext(hw.ridge_point_flops_per_byte, target_arch.bytes_per_param if target_arch else 2.0,
                      verify_convention=verify_convention, routing=curve)
    held_out = {}
    if stride:
        chosen, rest = stride_split(m, stride)
        train = m.subset(chosen)
        result = fit(train, hw, ctx, tp, target_arch, draft_arch, load_bound_factor=load_bound_factor)
        if rest.size:
            sp, _ = predicted_speedup(result.params, ctx, m.subset(rest))
            err = np.abs(100.0 * (sp / m.speedup[rest] - 1.0))
            held_out["stride_rest"] = {"method": f"fit on every {stride}th point, error on the rest",
                                       "n_points": int(rest.size), "median_abs_pct_error": float(np.median(err)),
                                       "max_abs_pct_error": float(np.max(err))}
    else:
        train = m
        result = fit(train, hw, ctx, tp, target_arch, draft_arch, load_bound_factor=load_bound_factor)
    held_out["leave_batch_size_out"] = held_out_error(train, hw, ctx, tp, target_arch, draft_arch,
                                                         load_bound_factor=load_bound_factor)
    out = {
        "params": result.params.to_dict(),
        "paper_convention": result.params.paper_convention(ctx.knee(result.params.lam)),
        "context": {"target": target_arch.name if target_arch else None, "draft": draft_arch.name if draft_arch else None,
                    "hardware": hw.name, "tp": tp, "verify_convention": verify_convention,
                    "knee_tokens": ctx.knee(result.params.lam), "measurements": measurements,
                    "load_bound_factor": load_bound_factor, "routing": routing},
        "fit": result.summary(),
        "notes": notes,
        "held_out": held_out,
        "residual_pct": result.residual_pct.tolist(),
    }
    text = render.to_json(out)
    if output:
        write_text_atomic(output, text)
    return text if as_json else render.fit_text(out) + (f"wrote {output}\n" if output else "")
