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
from collections import defaultdict
from pathlib import Path

import numpy as np

from moesd.atomic_io import write_atomic, write_text_atomic
from moesd.bench.results_file import read_records
from moesd.errors import MoesdError
from moesd.perf.experts import RoutingCurve, expected_active_experts
from moesd.perf.fit import fit, predicted_speedup
from moesd.perf.hardware import resolve_hardware
from moesd.perf.hf_config import load_config_json
from moesd.perf.measurements import measurements_from_records
from moesd.perf.model_presets import MODEL_PRESETS
from moesd.perf.step_time import StepContext
from moesd.perf.summary import BAND_FRACTION, intervals

REQUIRED = ("batch_size", "gamma", "speedup", "target_decode_s", "target_verify_s", "alpha", "sigma", "num_experts",
            "experts_per_token", "target")


def load_results(paths: list[str], skip_bad_lines: bool = False) -> list[dict]:
    records = []
    for path in paths:
        for i, rec in enumerate(read_records(path, skip_bad_lines), start=1):
            missing = [k for k in REQUIRED if rec.get(k) is None]
            if missing:
                raise MoesdError(f"{path}: record {i} lacks {missing}: not `moesd bench` output")
            rec["_source"] = f"{path}:{i}"
            records.append(rec)
    if not records:
        raise MoesdError("no results to report")
    return records


def label(rec: dict) -> str:
    name = Path(str(rec["target"])).stem
    kind = f"{rec['routing']} routing" if rec.get("routing") else "dense"
    return f"{name} ({kind}, K={rec['experts_per_token']}/{rec['num_experts']})" if rec.get("routing") else f"{name} (dense)"


def experts_at(rec: dict, phase: str) -> float | None:
    """Distinct experts per layer at the point's own token count (B for decode, B (gamma+1) for verify).

    The record's routing curve averages forwards by token count; later forwards of a run may have fewer
    rows, so a plain average over a phase would mix batch sizes."""
    tokens = rec["batch_size"] * (rec["gamma"] + 1 if phase == "verify" else 1)
    for t, d in rec.get("routing_curve") or []:
        if int(t) == tokens:
            return float(d)
    return rec.get(f"active_experts_{phase}")


def efficiency(rec: dict) -> float:
    return rec["target_decode_s"] / rec["target_verify_s"]


def curves(records: list[dict], by) -> dict:
    """Group records into curves keyed by `by(rec)`, each sorted by batch size."""
    out = defaultdict(list)
    for r in records:
        out[by(r)].append(r)
    return {k: sorted(v, key=lambda r: r["batch_size"]) for k, v in sorted(out.items(), key=lambda kv: str(kv[0]))}


def _fig(path: Path, draw) -> str:
    from moesd.perf.plot import pyplot

    fig, ax = pyplot().subplots(figsize=(8, 4.8))
    draw(fig, ax)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _batch_axis(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def fig_speedup(records, path: Path) -> str:
    def draw(fig, ax):
        for (lab, g), rs in curves(records, lambda r: (label(r), r["gamma"])).items():
            b = [r["batch_size"] for r in rs]
            ax.plot(b, [r["speedup"] for r in rs], marker="o", ms=3, ls="-" if rs[0].get("routing") else "--",
                    label=f"{lab}, gamma={g}")
            lo = [r["speedup_iqr"][0] for r in rs]
            hi = [r["speedup_iqr"][1] for r in rs]
            ax.fill_between(b, lo, hi, alpha=0.12)
        ax.axhline(1.0, color="grey", lw=0.8)
        _batch_axis(ax, "end-to-end speedup vs autoregressive (x)", "SD speedup vs batch size (median, IQR shaded)")
    return _fig(path, draw)


def fig_efficiency(records, path: Path) -> str:
    def draw(fig, ax):
        alpha_ax = ax.twinx()
        for (lab, g), rs in curves(records, lambda r: (label(r), r["gamma"])).items():
            b = [r["batch_size"] for r in rs]
            (line,) = ax.plot(b, [efficiency(r) for r in rs], marker="o", ms=3, label=f"{lab}, gamma={g}")
            alpha_ax.plot(b, [r["alpha"] for r in rs], ls=":", color=line.get_color(), alpha=0.7)
        alpha_ax.set_ylabel("alpha (dotted)")
        alpha_ax.set_ylim(0, 1)
        _batch_axis(ax, "target efficiency T_T(B,1) / T_T(B,verify)",
                    "Target efficiency (solid) and acceptance alpha (dotted)")
    return _fig(path, draw)


def sparsity_summary(records) -> list[dict]:
    rows = []
    moe = [r for r in records if r.get("routing")]
    for (k, g, routing), rs in curves(moe, lambda r: (r["experts_per_token"], r["gamma"], r["routing"])).items():
        b = [r["batch_size"] for r in rs]
        sp = np.array([r["speedup"] for r in rs])
        i = int(np.argmax(sp))
        rows.append({"K": k, "E": rs[0]["num_experts"], "gamma": g, "routing": routing, "peak_speedup": float(sp[i]),
                     "peak_batch_size": b[i], "band": intervals(b, sp >= sp[i] * BAND_FRACTION)})
    return rows


def fig_sparsity(records, path: Path) -> str:
    def draw(fig, ax):
        moe = [r for r in records if r.get("routing")]
        for (k, g, routing), rs in curves(moe, lambda r: (r["experts_per_token"], r["gamma"], r["routing"])).items():
            b = np.array([r["batch_size"] for r in rs])
            sp = np.array([r["speedup"] for r in rs])
            i = int(np.argmax(sp))
            (line,) = ax.plot(b, sp, marker="o", ms=3, label=f"K={k}/{rs[0]['num_experts']}, gamma={g}, {routing}")
            ax.plot([b[i]], [sp[i]], marker="*", ms=12, color=line.get_color())
            band = sp >= sp[i] * BAND_FRACTION
            ax.fill_between(b, 0, sp, where=band, color=line.get_color(), alpha=0.08, step="mid")
        _batch_axis(ax, "speedup (x); star = peak, shade = >= peak/sqrt(2)", "Sparsity sweep")
    return _fig(path, draw)


def fig_experts(records, path: Path) -> str:
    def draw(fig, ax):
        moe = [r for r in records if r.get("routing") and experts_at(r, "verify") is not None]
        t_max = 1
        for (k, e, routing), rs in curves(moe, lambda r: (r["experts_per_token"], r["num_experts"], r["routing"])).items():
            pts = sorted({(r["batch_size"], experts_at(r, "decode")) for r in rs}
                         | {(r["batch_size"] * (r["gamma"] + 1), experts_at(r, "verify")) for r in rs})
            t = [p[0] for p in pts]
            t_max = max(t_max, max(t))
            ax.plot(t, [p[1] for p in pts], marker="o", ms=3, ls="", label=f"measured, K={k}/{e}, {routing} routing")
        for k, e in sorted({(r["experts_per_token"], r["num_experts"]) for r in moe}):
            grid = np.unique(np.round(np.logspace(0, math.log10(t_max), 60)))
            ax.plot(grid, expected_active_experts(grid, e, k), lw=1, label=f"Eq. 8, K={k}/{e}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens in the forward (decode: B; verify: B x (gamma+1))")
        ax.set_ylabel("distinct experts per layer")
        ax.set_title("Measured distinct experts vs Eq. 8", fontsize=10)
        ax.legend(fontsize=7)
    return _fig(path, draw)


def _target_arch(rec: dict):
    t = str(rec["target"])
    if t in MODEL_PRESETS:
        return MODEL_PRESETS[t].arch()
    if Path(t).exists():
        return load_config_json(t)
    return None


def fit_groups(records, fraction: float = 0.1) -> list[dict]:
    """Per target and routing: fit on every n-th point (sorted by K, gamma, B as the paper), test on the rest."""
    out = []
    for (target, routing), rs in curves(records, lambda r: (str(r["target"]), r.get("routing") or "dense")).items():
        rs = sorted(rs, key=lambda r: (r["experts_per_token"], r["gamma"], r["batch_size"]))
        arch = _target_arch(rs[0])
        hw = resolve_hardware(rs[0].get("hardware") or "cpu")
        curve = None
        if routing == "model":
            curve = RoutingCurve.merge(rs[0]["num_experts"], rs[0]["experts_per_token"],
                                       [r.get("routing_curve") for r in rs])
        ctx = StepContext(hw.ridge_point_flops_per_byte, arch.bytes_per_param if arch else 2.0, routing=curve)
        m = measurements_from_records([(r["_source"], r) for r in rs])
        n_free = 10 if (arch is None or arch.is_moe) else 8
        n_fit = max(math.ceil(fraction * len(rs)), n_free)
        if len(rs) <= n_fit:
            out.append({"target": target, "routing": routing, "points": len(rs), "note": "too few points to hold any out"})
            continue
        # Evenly spread over the list sorted by K, gamma, B: the paper's fixed stride, sized to n_fit.
        chosen = np.unique(np.linspace(0, len(rs) - 1, n_fit).round().astype(int))
        rest = np.setdiff1d(np.arange(len(rs)), chosen)
        result = fit(m.subset(chosen), hw, ctx, 1, arch)
        pred, _ = predicted_speedup(result.params, ctx, m.subset(rest))
        err = np.abs(pred / m.speedup[rest] - 1) * 100
        out.append({"target": target, "routing": routing, "points": len(rs), "fitted": int(chosen.size),
                    "held_out": int(rest.size), "median_abs_pct_error": float(np.median(err)),
                    "max_abs_pct_error": float(np.max(err)), "measured": m.speedup[rest].tolist(),
                    "predicted": pred.tolist(), "params": result.params.to_dict()})
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
        ax.legend(fontsize=7)
    return _fig(path, draw)


def _fmt(x, digits=3):
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def markdown(records, figures: list[str], sparsity: list[dict], groups: list[dict]) -> str:
    lines = ["# moesd report", ""]
    conds = records[0].get("conditions", {})
    lines.append(f"{len(records)} points; first point's conditions: " + ", ".join(
        f"{k}={v}" for k, v in conds.items() if k in ("date", "git_commit", "device", "device_name", "dtype", "torch",
                                                      "transformers", "experts_implementation", "workload",
                                                      "max_new_tokens", "repeats", "warmup")))
    lines += ["", "## Points", "",
              "| target | B | gamma | speedup [IQR] | target eff. | alpha | sigma | T_T(B,1) ms | T_T(B,verify) ms | "
              "T_D ms | experts decode / Eq. 8 | experts verify / Eq. 8 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (label(r), r["gamma"], r["batch_size"])):
        e, k = r["num_experts"], r["experts_per_token"]
        experts = ("-", "-")
        if experts_at(r, "verify") is not None:
            experts = (f"{experts_at(r, 'decode'):.1f} / {float(expected_active_experts(r['batch_size'], e, k)):.1f}",
                       f"{experts_at(r, 'verify'):.1f} / "
                       f"{float(expected_active_experts(r['batch_size'] * (r['gamma'] + 1), e, k)):.1f}")
        lines.append(f"| {label(r)} | {r['batch_size']} | {r['gamma']} | {r['speedup']:.2f} "
                     f"[{r['speedup_iqr'][0]:.2f}, {r['speedup_iqr'][1]:.2f}] | {efficiency(r):.3f} | {r['alpha']:.2f} | "
                     f"{r['sigma']:.3f} | {1e3 * r['target_decode_s']:.1f} | {1e3 * r['target_verify_s']:.1f} | "
                     f"{_fmt(1e3 * r['draft_s'] if r.get('draft_s') else None, 2)} | {experts[0]} | {experts[1]} |")
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


def _save(fig, path: Path) -> str:
    from moesd.perf.plot import pyplot

    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    pyplot().close(fig)
    return path.name


def write_report(paths: list[str], out_dir: str, skip_bad_lines: bool = False) -> list[str]:
    from moesd.bench import budget_report

    all_records = load_results(paths, skip_bad_lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    budgeted = budget_report.budget_records(all_records)
    # Budgeted points are a different verifier: the speed/fit figures use the unbudgeted ones only.
    records = [r for r in all_records if r.get("expert_budget") is None]
    figures = [fig_speedup(records, out / "speedup_vs_batch.png"),
               fig_efficiency(records, out / "efficiency_vs_batch.png")]
    sparsity = sparsity_summary(records)
    if sparsity:
        figures.append(fig_sparsity(records, out / "sparsity.png"))
    if any(experts_at(r, "verify") is not None for r in records):
        figures.append(fig_experts(records, out / "experts_vs_eq8.png"))
    groups = fit_groups(records)
    if any("measured" in g for g in groups):
        figures.append(fig_predicted(groups, out / "predicted_vs_measured.png"))
    md = markdown(records, figures, sparsity, groups)
    if budgeted:
        figures += [budget_report.fig_pareto(budgeted, out / "budget_pareto.png", _save),
                    budget_report.fig_experts_vs_budget(budgeted, out / "experts_vs_budget.png", _save)]
        md += "\n".join(budget_report.markdown(budgeted)) + "\n\n" + \
            "".join(f"![{f}]({f})\n" for f in figures[-2:])
    write_text_atomic(out / "report.md", md)
    return ["report.md", *figures]
