from __future__ import annotations

import numpy as np

from moesd import render
from moesd.atomic_io import write_text_atomic
from moesd.bench.record import read_bench_records
from moesd.errors import MoesdError
from moesd.perf.experts import RoutingCurve
from moesd.atomic_io import check_writable
from moesd.perf.fit import (FEW_POINT_PARAMETERS, TooFewPoints, fit, fit_context, fit_few, held_out_error,
                            predicted_speedup, stride_split)
from moesd.perf.profiles import resolve_profile
from moesd.perf.hardware import resolve_hardware
from moesd.perf.inputs import resolve_model
from moesd.perf.measurements import load_measurements, measurements_from_records


HELP = "fit Algorithm 1's parameters to measurements (JSONL or CSV)"
EXAMPLES = 'examples:\n  moesd fit results/cpu_moe.jsonl --routing uniform -o params.json\n  moesd fit my_points.csv --target Qwen3-30B-A3B --hardware H100-SXM --tp 2 -o params.json'


def add_arguments(p) -> None:
    p.add_argument("measurements", help="JSONL or CSV: one measurement per line/row (`moesd bench` output works)")
    p.add_argument("--target", help="preset or config.json (supplies E, K and byte counts)")
    p.add_argument("--draft", help="draft preset or config.json")
    p.add_argument("--draft-kind", choices=["model", "eagle", "mtp", "ngram"],
                   help="what drafts (as in `moesd predict`): an EAGLE head or MTP module is priced from the target's "
                        "sizes; default: model with --draft, else none")
    p.add_argument("--hardware", help="hardware preset or JSON (default: the file's 'hardware' column)")
    p.add_argument("--tp", type=int, help="target tensor-parallel degree (default: the file's 'tp' column, else 1)")
    p.add_argument("--engine", help="execution profile of the prior that a few-point fit (< 10 points) starts "
                                    "from (see `moesd predict --help`); default by hardware")
    p.add_argument("--verify-tokens", choices=["engine", "paper"], default="engine",
                   help="tokens per sequence in a verify pass: gamma+1 (engine) or gamma (paper)")
    p.add_argument("--stride", type=int, help="fit every N-th point (sorted by K, gamma, B), test on the rest")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip malformed JSONL lines instead of stopping")
    p.add_argument("--routing", choices=["uniform", "model"],
                   help="bench output: fit only this routing's points (model: N(t) from the measured curves)")
    p.add_argument("--load-bound-factor", type=float, default=5.0,
                   help="fit loads within [bytes/bandwidth, factor x that] (paper App. C.2: 5)")
    p.add_argument("-o", "--output", help="write the fitted parameters (JSON) for `predict --params`")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(a) -> str:
    return _run(a.measurements, a.target, a.draft, a.hardware, a.tp, a.verify_tokens, a.stride, a.skip_bad_lines,
                a.output, a.json, a.load_bound_factor, a.routing, a.engine, a.draft_kind)


def _run(measurements: str, target: str | None, draft: str | None, hardware: str | None, tp: int | None,
         verify_convention: str, stride: int | None, skip_bad_lines: bool, output: str | None,
         as_json: bool, load_bound_factor: float = 5.0, routing: str | None = None, engine: str | None = None,
         draft_kind: str | None = None) -> str:
    if output:
        check_writable(output)
    if stride is not None and stride < 2:
        raise MoesdError(f"--stride must be >= 2, got {stride}")
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
        records = [r for r in read_bench_records(measurements, skip_bad_lines) if r.routing == routing]
        if not records:
            raise MoesdError(f"{measurements}: no points with routing {routing!r}")
        m = measurements_from_records([(r.source, r.to_dict()) for r in records], source=measurements, **defaults)
        if routing == "model":
            curve = RoutingCurve.merge(int(m.num_experts[0]), int(m.experts_per_token[0]),
                                       [r.routing_curve for r in records], measurements)
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
    if tp is None:
        raw_tp = m.context.get("tp", 1)
        try:
            tp = int(raw_tp)
            if tp != float(raw_tp):
                raise ValueError
        except (TypeError, ValueError):
            raise MoesdError(f"{measurements}: column 'tp' must be an integer, got {raw_tp!r}") from None
    if tp < 1:
        raise MoesdError(f"tensor-parallel degree must be >= 1, got {tp}")
    hw = resolve_hardware(str(hardware))
    draft_arch = _draft_arch(draft, draft_kind, target_arch)
    ctx = fit_context(hw, target_arch, verify_convention, curve)
    profile = resolve_profile(engine, hw.name)
    held_out = {}

    def fit_any(data):
        try:
            return fit(data, hw, ctx, tp, target_arch, draft_arch, load_bound_factor=load_bound_factor)
        except TooFewPoints as exc:
            few = fit_few(data, hw, ctx, tp, target_arch, draft_arch, profile)
            notes.append(f"{exc}: fitted only {', '.join(few.free)} (of {', '.join(FEW_POINT_PARAMETERS)}, as many "
                         f"as the data pins) on the physical prior with engine profile {profile.name}")
            return few

    if stride:
        chosen, rest = stride_split(m, stride)
        train = m.subset(chosen)
        result = fit_any(train)
        if rest.size:
            sp, _ = predicted_speedup(result.params, ctx, m.subset(rest))
            err = np.abs(100.0 * (sp / m.speedup[rest] - 1.0))
            held_out["stride_rest"] = {"method": f"fit on every {stride}th point, error on the rest",
                                       "n_points": int(rest.size), "median_abs_pct_error": float(np.median(err)),
                                       "max_abs_pct_error": float(np.max(err))}
    else:
        train = m
        result = fit_any(train)
    held_out["leave_batch_size_out"] = held_out_error(train, hw, ctx, tp, target_arch, draft_arch,
                                                         load_bound_factor=load_bound_factor)
    out = {
        "params": result.params.to_dict(),
        "paper_convention": result.params.paper_convention(ctx.knee(result.params.lam)),
        # Provenance: `predict --params` refuses these parameters for another target or hardware.
        "context": {"target": target_arch.name if target_arch else m.context.get("target"),
                    "draft": draft_arch.name if draft_arch else None, "hardware": hw.name, "tp": tp, "ep": 1,
                    "engine": (profile.name if set(result.free) <= set(FEW_POINT_PARAMETERS)
                               else "fitted (all parameters)"),
                    "verify_convention": verify_convention, "knee_tokens": ctx.knee(result.params.lam),
                    "measurements": measurements, "data": {"points": len(train),
                                                           "batch_sizes": sorted({int(b) for b in train.batch_size}),
                                                           "gammas": sorted({int(g) for g in train.gamma})},
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


def _draft_arch(draft: str | None, kind: str | None, target_arch):
    from moesd.perf.draft_kinds import draft_head

    if kind in (None, "model"):
        if kind == "model" and not draft:
            raise MoesdError("--draft-kind model needs --draft (a preset or config.json)")
        return resolve_model(draft) if draft else None
    if draft:
        raise MoesdError(f"--draft names a draft model, but --draft-kind is {kind}: give one or the other")
    if target_arch is None and kind != "ngram":
        raise MoesdError(f"--draft-kind {kind} is priced from the target's sizes: pass --target")
    return draft_head(target_arch, kind) if kind != "ngram" else None
