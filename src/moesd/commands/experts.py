from __future__ import annotations

import numpy as np

from moesd import render
from moesd.perf.plot import check_plot_path
from moesd.commands.flags import int_list
from moesd.errors import MoesdError
from moesd.perf.experts import (RoutingCurve, check_experts, expected_active_experts, saturation_tokens,
                                tokens_per_active_expert)


HELP = "expected distinct experts N(t), tokens per expert, T_thres"
EXAMPLES = 'examples:\n  moesd experts --num-experts 64 --top-k 8 --tokens 1,2,4,8,16\n  moesd experts --target OLMoE-1B-7B --routing-curve curve.json --plot experts.png'


def add_arguments(p) -> None:
    p.add_argument("--num-experts", type=int, help="E (or take it from --target)")
    p.add_argument("--top-k", type=int, help="K (or take it from --target)")
    p.add_argument("--target", help="take E and K from a preset or config.json")
    p.add_argument("--tokens", type=int_list, default=[1, 2, 4, 8, 16, 32, 64, 128], help="token counts t")
    p.add_argument("--tau", type=float, default=0.95, help="saturation fraction for T_thres (Eq. 10)")
    p.add_argument("--routing-curve", help="measured distinct-experts curve JSON to compare with Eq. 8")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", help="write a figure of N(t)")


def run(a) -> str:
    if a.plot:
        check_plot_path(a.plot)
    return _run(a.num_experts, a.top_k, a.tokens, a.tau, a.target, a.routing_curve, a.json, a.plot)


def _run(num_experts: int | None, top_k: int | None, tokens: list[int], tau: float, target: str | None,
         routing_curve: str | None, as_json: bool, plot: str | None) -> str:
    if target is not None:
        from moesd.perf.inputs import resolve_model

        arch = resolve_model(target)
        num_experts = num_experts or arch.num_experts
        top_k = top_k or arch.experts_per_token
    if num_experts is None or top_k is None:
        raise MoesdError("give --num-experts and --top-k, or --target")
    check_experts(num_experts, top_k)
    if min(tokens) < 1:
        raise MoesdError(f"token counts must be >= 1, got {min(tokens)}")
    t = np.asarray(tokens, dtype=float)
    n = expected_active_experts(t, num_experts, top_k)
    curve = RoutingCurve.from_file(routing_curve) if routing_curve else None
    measured = curve.active_experts(t, num_experts, top_k) if curve else None
    rows = []
    for i, tok in enumerate(tokens):
        used = measured[i] if measured is not None else n[i]
        row = {"tokens": int(tok), "active_experts": float(n[i]),
               "tokens_per_expert": float(tokens_per_active_expert(tok, top_k, used))}
        if measured is not None:
            row["measured_active_experts"] = float(measured[i])
        rows.append(row)
    threshold = saturation_tokens(num_experts, top_k, tau)
    if plot:
        from moesd.perf.plot import plot_experts

        curves = {"Eq. 8 (i.i.d.)": n}
        if measured is not None:
            curves["measured routing"] = measured
        plot_experts(t, curves, num_experts, f"distinct experts, E={num_experts}, K={top_k}", plot)
    if as_json:
        return render.to_json({"num_experts": num_experts, "top_k": top_k, "tau": tau,
                               "saturation_tokens": threshold, "rows": rows})
    return render.experts_text(rows, num_experts, top_k, tau, threshold)
