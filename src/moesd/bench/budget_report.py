"""The expert-budget part of `moesd report`: speed beside quality for every budget.

- budget_pareto.png: speedup vs autoregressive against quality (token match with unbudgeted SD at
  temperature 0; mean KL(full || budgeted) per verify token), one line per workload / B / gamma, each
  point labelled with its budget C (C = "-" is unbudgeted SD);
- experts_vs_budget.png: distinct experts per layer in a verify forward vs C, per batch size.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from moesd.bench.figures import figure, legend
from moesd.bench.record import BenchRecord


def budget_records(records: list[BenchRecord]) -> list[BenchRecord]:
    return [r for r in records if r.budgeted]


def _series(records):
    out = defaultdict(list)
    for r in records:
        key = ((r.conditions or {}).get("workload", "?"), Path(r.target).stem,
               f"{r.routing}, {r.budget_mode or 'substitution'}", r.batch_size, r.gamma, r.temperature)
        out[key].append(r)
    return {k: sorted(v, key=lambda r: -1 if r.expert_budget is None else r.expert_budget)
            for k, v in sorted(out.items(), key=lambda kv: (*map(str, kv[0][:3]), *kv[0][3:]))}


def _ref(rs):
    return next((r for r in rs if r.expert_budget is None), None)


def fig_pareto(records, path: Path) -> str:
    return figure(path, lambda fig, axes: _draw_pareto(records, fig, axes), ncols=2, figsize=(11, 4.8), sharey=True)


def _draw_pareto(records, fig, axes) -> None:
    for (workload, target, routing, b, g, t), rs in _series(records).items():
        lab = f"{workload}, {target} ({routing}), B={b}, gamma={g}, T={t:g}"
        match = [(r.quality.get("token_match_rate"), r.speedup, r.expert_budget) for r in rs]
        match = [m for m in match if m[0] is not None]
        if match:
            axes[0].plot([m[0] for m in match], [m[1] for m in match], marker="o", ms=4, label=lab)
            for x, y, c in match:
                axes[0].annotate("-" if c is None else str(c), (x, y), fontsize=7, xytext=(3, 3),
                                 textcoords="offset points")
        kl = [(r.quality["mean_kl_per_token"], r.speedup, r.expert_budget) for r in rs
              if r.quality.get("mean_kl_per_token")]
        if kl:
            axes[1].plot([k[0] for k in kl], [k[1] for k in kl], marker="o", ms=4, label=lab)
            for x, y, c in kl:
                axes[1].annotate(str(c), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set_xlabel("token match with unbudgeted SD (T = 0)")
    axes[0].set_ylabel("end-to-end speedup vs autoregressive (x)")
    axes[1].set_xlabel("mean KL(full || budgeted) per verify token (nats)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.axhline(1.0, color="grey", lw=0.8)
    legend(axes[1])
    fig.suptitle("Expert budgets: speed vs quality (labels: budget C; '-' = unbudgeted SD)", fontsize=10)


def fig_experts_vs_budget(records, path: Path) -> str:
    return figure(path, lambda fig, ax: _draw_experts_vs_budget(records, ax))


def _draw_experts_vs_budget(records, ax) -> None:
    for (workload, target, routing, b, g, t), rs in _series(records).items():
        pts = [(r.expert_budget, r.active_experts_verify) for r in rs if r.expert_budget]
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4,
                          label=f"{target} ({routing}), B={b}, gamma={g}, T={t:g}")
        ref = _ref(rs)
        if ref is not None and ref.active_experts_verify is not None:
            ax.axhline(ref.active_experts_verify, color=line.get_color(), ls=":", lw=1)
    caps = sorted({r.expert_budget for r in records if r.expert_budget})
    # The cap itself: y = C at every budget swept (a two-point segment on the log x axis misplaced it).
    ax.plot(caps, caps, color="grey", lw=0.8, ls="--", marker="_", ms=12, label="cap: C experts")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget C (experts per layer per verify forward)")
    ax.set_ylabel("distinct experts per layer, verify")
    ax.set_title("Experts loaded vs budget (dotted: unbudgeted)", fontsize=10)
    legend(ax)


def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def markdown(records) -> list[str]:
    lines = ["", "## Expert budgets (MoE-Spec; budgeted SD is not lossless)", "",
             "Speed and quality against unbudgeted SD on the same prompts, draft and seed. Token match is "
             "position-wise agreement of the generated tokens (temperature 0 only); KL is KL(full target || "
             "budgeted target) per verify token, the same blocks re-run unbudgeted.", "",
             "| workload | target | routing | B | gamma | T | C | mode / scope | experts verify | T_verify ms | "
             "speedup vs AR | vs unbudgeted SD | accept. length (ratio) | token match | KL/token | pass@1 (ref) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (workload, target, routing, b, g, t), rs in _series(records).items():
        ref = _ref(rs)
        for r in rs:
            q = r.quality
            rel = r.sd_tokens_per_s / ref.sd_tokens_per_s if ref and r.sd_tokens_per_s and ref.sd_tokens_per_s else None
            pass1 = "-" if q.get("pass_at_1") is None else f"{q['pass_at_1']:.3f} ({_f(q.get('reference_pass_at_1'))})"
            lines.append(
                f"| {workload} | {target} | {routing} | {b} | {g} | {t:g} | {r.expert_budget or '-'} | "
                f"{r.budget_mode or '-'} / {r.budget_scope or '-'} | {_f(r.active_experts_verify, '{:.1f}')} | "
                f"{_f(r.target_verify_s * 1e3, '{:.1f}')} | "
                f"{r.speedup:.2f} | {_f(rel, '{:.2f}')} | "
                f"{q['mean_acceptance_length']:.2f} ({q['acceptance_length_ratio']:.2f}) | "
                f"{_f(q.get('token_match_rate'))} | {_f(q.get('mean_kl_per_token'), '{:.4f}')} | {pass1} |")
    return lines
