"""`moesd report`: markdown tables and PNG figures from `moesd bench` results.

Figures (each only when the results contain what it needs):
- speedup_vs_batch.png: end-to-end speedup vs batch size, one line per target / routing / gamma (MoE vs dense);
- efficiency_vs_batch.png: target efficiency T_T(B,1)/T_T(B,verify) vs batch size, alpha beside it;
- sparsity.png: speedup vs batch size per K, with each curve's peak and its >= peak/sqrt(2) band;
- predicted_vs_measured.png: the model fitted on a stride subset (about a tenth of the points, never fewer
  than its free parameters) against the points it did not see;
- experts_vs_eq8.png: distinct experts per layer measured in decode and verify forwards vs Eq. 8.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from moesd.atomic_io import write_text_atomic
from moesd.bench.figures import batch_axis, figure, legend
from moesd.bench.record import BenchRecord, read_bench_records
from moesd.errors import MoesdError
from moesd.perf.experts import RoutingCurve, expected_active_experts
from moesd.perf.fit import fit_context, fit_on_spread
from moesd.perf.hardware import resolve_hardware
from moesd.perf.inputs import optional_model
from moesd.perf.measurements import measurements_from_records
from moesd.perf.summary import BAND_FRACTION, intervals


def load_results(paths: list[str], skip_bad_lines: bool = False) -> list[BenchRecord]:
    records = [r for path in paths for r in read_bench_records(path, skip_bad_lines)]
    if not records:
        raise MoesdError("no results to report")
    return records


def label(rec: BenchRecord) -> str:
    """One series per (file, target, draft, settings): series of different files, models or drafts never merge."""
    name = Path(rec.target).stem
    draft = Path(rec.draft).stem if rec.draft else rec.draft_method
    kind = f"{rec.routing} routing, K={rec.experts_per_token}/{rec.num_experts}" if rec.is_moe else "dense"
    file = Path(rec.source.rsplit(":", 1)[0]).stem if rec.source else ""
    return f"{name} + {draft} ({kind}, T={rec.temperature:g})" + (f" [{file}]" if file else "")


def _k_sweep(records: list[BenchRecord]) -> list[BenchRecord]:
    """Points of MoE series that sweep K (more than one K for the same file, target and draft)."""
    ks = defaultdict(set)
    for r in records:
        if r.is_moe:
            ks[(r.source.rsplit(":", 1)[0], r.target, r.draft)].add(r.experts_per_token)
    return [r for r in records if r.is_moe and len(ks[(r.source.rsplit(":", 1)[0], r.target, r.draft)]) > 1]


def curves(records: list[BenchRecord], by) -> dict:
    """Group records into curves keyed by `by(rec)`, each sorted by batch size."""
    out = defaultdict(list)
    for r in records:
        out[by(r)].append(r)
    return {k: sorted(v, key=lambda r: r.batch_size) for k, v in sorted(out.items(), key=lambda kv: str(kv[0]))}


def fig_speedup(records, path: Path) -> str:
    def draw(fig, ax):
        for (lab, g), rs in curves(records, lambda r: (label(r), r.gamma_label)).items():
            b = [r.batch_size for r in rs]
            ax.plot(b, [r.speedup for r in rs], marker="o", ms=3, ls="-" if rs[0].is_moe else "--",
                    label=f"{lab}, gamma={g}")
            lo = [(r.speedup_iqr or [r.speedup] * 2)[0] for r in rs]
            hi = [(r.speedup_iqr or [r.speedup] * 2)[1] for r in rs]
            ax.fill_between(b, lo, hi, alpha=0.12)
        ax.axhline(1.0, color="grey", lw=0.8)
        batch_axis(ax, "end-to-end speedup vs autoregressive (x)", "SD speedup vs batch size (median, IQR shaded)")
    return figure(path, draw)


def fig_efficiency(records, path: Path) -> str:
    def draw(fig, ax):
        alpha_ax = ax.twinx()
        for (lab, g), rs in curves(records, lambda r: (label(r), r.gamma_label)).items():
            b = [r.batch_size for r in rs]
            (line,) = ax.plot(b, [r.target_efficiency for r in rs], marker="o", ms=3, label=f"{lab}, gamma={g}")
            alpha_ax.plot(b, [r.alpha for r in rs], ls=":", color=line.get_color(), alpha=0.7)
        alpha_ax.set_ylabel("alpha (dotted)")
        alpha_ax.set_ylim(0, 1)
        batch_axis(ax, "target efficiency T_T(B,1) / T_T(B,verify)",
                    "Target efficiency (solid) and acceptance alpha (dotted)")
    return figure(path, draw)


def sparsity_summary(records) -> list[dict]:
    rows = []
    moe = _k_sweep(records)
    for (k, g, routing), rs in curves(moe, lambda r: (r.experts_per_token, r.gamma_label, r.routing)).items():
        b = [r.batch_size for r in rs]
        sp = np.array([r.speedup for r in rs])
        i = int(np.argmax(sp))
        rows.append({"K": k, "E": rs[0].num_experts, "gamma": g, "routing": routing, "peak_speedup": float(sp[i]),
                     "peak_batch_size": b[i], "band": intervals(b, sp >= sp[i] * BAND_FRACTION)})
    return rows


def fig_sparsity(records, path: Path) -> str:
    def draw(fig, ax):
        moe = _k_sweep(records)
        for (k, g, routing), rs in curves(moe, lambda r: (r.experts_per_token, r.gamma_label, r.routing)).items():
            b = np.array([r.batch_size for r in rs])
            sp = np.array([r.speedup for r in rs])
            i = int(np.argmax(sp))
            (line,) = ax.plot(b, sp, marker="o", ms=3, label=f"K={k}/{rs[0].num_experts}, gamma={g}, {routing}")
            ax.plot([b[i]], [sp[i]], marker="*", ms=12, color=line.get_color())
            band = sp >= sp[i] * BAND_FRACTION
            ax.fill_between(b, 0, sp, where=band, color=line.get_color(), alpha=0.08, step="mid")
        batch_axis(ax, "speedup (x); star = peak, shade = >= peak/sqrt(2)", "Sparsity sweep")
    return figure(path, draw)


def fig_experts(records, path: Path) -> str:
    def draw(fig, ax):
        moe = [r for r in records if r.is_moe and r.experts_at("verify") is not None]
        t_max = 1
        for (k, e, routing), rs in curves(moe, lambda r: (r.experts_per_token, r.num_experts, r.routing)).items():
            pts = sorted({(r.batch_size, r.experts_at("decode")) for r in rs}
                         | {(r.batch_size * (r.gamma + 1), r.experts_at("verify")) for r in rs})
            t = [p[0] for p in pts]
            t_max = max(t_max, max(t))
            ax.plot(t, [p[1] for p in pts], marker="o", ms=3, ls="", label=f"measured, K={k}/{e}, {routing} routing")
        for k, e in sorted({(r.experts_per_token, r.num_experts) for r in moe}):
            grid = np.unique(np.round(np.logspace(0, math.log10(t_max), 60)))
            ax.plot(grid, expected_active_experts(grid, e, k), lw=1, label=f"Eq. 8, K={k}/{e}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens in the forward (decode: B; verify: B x (gamma+1))")
        ax.set_ylabel("distinct experts per layer")
        ax.set_title("Measured distinct experts vs Eq. 8", fontsize=10)
        legend(ax)
    return figure(path, draw)


def fit_groups(records: list[BenchRecord], fraction: float = 0.1) -> list[dict]:
    """Per target and routing: fit on a spread tenth of the points (perf/fit.py), error on the rest."""
    out = []
    for (target, routing), rs in curves(records, lambda r: (r.target, r.routing or "dense")).items():
        arch = optional_model(target)
        hw = resolve_hardware(rs[0].hardware or "cpu")
        curve = None
        if routing == "model":
            curve = RoutingCurve.merge(rs[0].num_experts, rs[0].experts_per_token, [r.routing_curve for r in rs])
        m = measurements_from_records([(r.source, r.to_dict()) for r in rs])
        group = fit_on_spread(m, hw, fit_context(hw, arch, routing=curve), 1, arch, fraction)
        out.append({"target": target, "routing": routing, **group})
    return out


def fig_predicted(groups, path: Path) -> str:
    def draw(fig, ax):
        lo, hi = 1e9, 0
        for g in groups:
            if "measured" not in g:
                continue
            ax.plot(g["measured"], g["predicted"], marker="o", ls="", ms=4,
                    label=f"{Path(g['target']).stem} ({g['routing']}): median |err| {g['median_abs_pct_error']:.1f} %")
            lo, hi = min(lo, *g["measured"], *g["predicted"]), max(hi, *g["measured"], *g["predicted"])
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel("measured speedup (held-out points)")
        ax.set_ylabel("predicted speedup")
        ax.set_title("Model fitted on a stride subset vs the points it did not see", fontsize=10)
        legend(ax)
    return figure(path, draw)


def _fmt(x, digits=3):
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def markdown(records, figures: list[str], sparsity: list[dict], groups: list[dict]) -> str:
    lines = ["# moesd report", ""]
    conds = records[0].conditions or {}
    lines.append(f"{len(records)} points; first point's conditions: " + ", ".join(
        f"{k}={v}" for k, v in conds.items() if k in ("date", "git_commit", "device", "device_name", "dtype", "torch",
                                                      "transformers", "experts_implementation", "workload",
                                                      "max_new_tokens", "repeats", "warmup")))
    lines += ["", "## Points", "",
              "| target | B | gamma | speedup [IQR] | target eff. | alpha | sigma | T_T(B,1) ms | T_T(B,verify) ms | "
              "T_D ms | experts decode / Eq. 8 | experts verify / Eq. 8 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (label(r), str(r.gamma_label), r.batch_size)):
        e, k = r.num_experts, r.experts_per_token
        experts = ("-", "-")
        if r.experts_at("verify") is not None and r.experts_at("decode") is not None:
            experts = (f"{r.experts_at('decode'):.1f} / {float(expected_active_experts(r.batch_size, e, k)):.1f}",
                       f"{r.experts_at('verify'):.1f} / "
                       f"{float(expected_active_experts(r.batch_size * (r.gamma + 1), e, k)):.1f}")
        iqr = r.speedup_iqr or [r.speedup] * 2
        lines.append(f"| {label(r)} | {r.batch_size} | {r.gamma_label} | {r.speedup:.2f} "
                     f"[{iqr[0]:.2f}, {iqr[1]:.2f}] | {r.target_efficiency:.3f} | {r.alpha:.2f} | "
                     f"{r.sigma:.3f} | {1e3 * r.target_decode_s:.1f} | {1e3 * r.target_verify_s:.1f} | "
                     f"{_fmt(1e3 * r.draft_s if r.draft_s else None, 2)} | {experts[0]} | {experts[1]} |")
    auto = [r for r in records if r.gamma_policy == "auto"]
    if auto:
        lines += ["", "## `--gamma auto`: what the engine chose", "",
                  "| target | B | speedup | mean gamma | gammas chosen (gamma: steps) | decision us/step |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(auto, key=lambda r: (label(r), r.batch_size)):
            hist = ", ".join(f"{g}: {n}" for g, n in sorted((r.gamma_histogram or {}).items(), key=lambda x: int(x[0])))
            lines.append(f"| {label(r)} | {r.batch_size} | {r.speedup:.2f} | {_fmt(r.mean_gamma, 2)} | {hist} | "
                         f"{_fmt(r.decision_us_per_step, 0)} |")
    if sparsity:
        lines += ["", "## Peak and >= peak/sqrt(2) band per sparsity", "",
                  "| K / E | gamma | routing | peak speedup | at B | band (batch sizes) |", "|---|---|---|---|---|---|"]
        for s in sparsity:
            band = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in s["band"])
            lines.append(f"| {s['K']} / {s['E']} | {s['gamma']} | {s['routing']} | {s['peak_speedup']:.2f} | "
                         f"{s['peak_batch_size']} | {band} |")
    if groups:
        lines += ["", "## Model fitted on a stride subset, error on the rest", "",
                  "| target | routing | points | fitted | held out | median abs % error | max abs % error |",
                  "|---|---|---|---|---|---|---|"]
        for g in groups:
            if "measured" in g:
                lines.append(f"| {Path(g['target']).stem} | {g['routing']} | {g['points']} | {g['fitted']} | "
                             f"{g['held_out']} | {g['median_abs_pct_error']:.1f} | {g['max_abs_pct_error']:.1f} |")
            else:
                lines.append(f"| {Path(g['target']).stem} | {g['routing']} | {g['points']} | - | - | {g['note']} | |")
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_report(paths: list[str], out_dir: str, skip_bad_lines: bool = False, quiet: bool = False) -> list[str]:
    """Everything is drawn in a staging directory inside `out_dir` and moved into place only when all of it
    succeeded, report.md last: a failure leaves the previous report whole, never old text beside new figures."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MoesdError(f"cannot write the report into {out}: it is a file, not a directory")
    all_records = load_results(paths, skip_bad_lines)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    except OSError as exc:
        raise MoesdError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    try:
        from moesd.progress import progress

        with progress(total=1, desc="report", unit="report", quiet=quiet) as meter:
            files = _render(all_records, stage)
            meter.update(1)
        for name in [*files[1:], files[0]]:
            os.replace(stage / name, out / name)
    except OSError as exc:
        raise MoesdError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return files


def _render(all_records: list[BenchRecord], out: Path) -> list[str]:
    from moesd.bench import budget_report

    budgeted = budget_report.budget_records(all_records)
    # Budgeted points are a different verifier: the speed/fit figures use the unbudgeted ones only.
    records = [r for r in all_records if r.expert_budget is None]
    figures = []
    if records:
        figures += [fig_speedup(records, out / "speedup_vs_batch.png"),
                    fig_efficiency(records, out / "efficiency_vs_batch.png")]
    sparsity = sparsity_summary(records)
    if sparsity:
        figures.append(fig_sparsity(records, out / "sparsity.png"))
    if any(r.experts_at("verify") is not None for r in records):
        figures.append(fig_experts(records, out / "experts_vs_eq8.png"))
    groups = fit_groups(records)
    if any("measured" in g for g in groups):
        figures.append(fig_predicted(groups, out / "predicted_vs_measured.png"))
    md = markdown(records or all_records, figures, sparsity, groups)
    if budgeted:
        figures += [budget_report.fig_pareto(budgeted, out / "budget_pareto.png"),
                    budget_report.fig_experts_vs_budget(budgeted, out / "experts_vs_budget.png")]
        md += "\n".join(budget_report.markdown(budgeted)) + "\n\n" + \
            "".join(f"![{f}]({f})\n" for f in figures[-2:])
    write_text_atomic(out / "report.md", md)
    return ["report.md", *figures]
