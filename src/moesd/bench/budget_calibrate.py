"""`moesd budget calibrate`: the smallest expert budget per batch size that meets a quality floor,
instead of MoE-Spec's hand-picked budget per (model, benchmark).

For each batch size: unbudgeted SD on the workload's first N prompts (in batches of B) is the
reference; candidate
budgets are tried from the smallest up, each with an untimed quality run (mean KL(full || budgeted)
per verify token, token match at temperature 0); the first that meets every floor given is chosen.
Quality falls roughly monotonically as C shrinks, so the smallest passing budget is also the
fastest safe one. The reference runs' routing counts also give MoE-Spec's static expert order
(most selected first, per layer), stored for `--budget-static`.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from moesd.atomic_io import write_text_atomic
from moesd.bench.budget_quality import compare, merge_runs, quality_run
from moesd.bench.workloads import batch_prompts, load_workload, tokenize_prompts
from moesd.errors import MoesdError


def default_budgets(num_experts: int, top_k: int) -> list[int]:
    out, c = [], top_k
    while c < num_experts:
        out.append(c)
        c *= 2
    return out


def calibrate(spec, workload: str, batch_sizes: list[int], budgets: list[int] | None, max_kl: float | None,
              min_match: float | None, max_new_tokens: int, chat: bool, max_prompt_tokens: int | None = None,
              num_prompts: int = 16, progress=None, quiet: bool = False) -> dict:
    """`spec`: the unbudgeted engine (engine/factory.py EngineSpec); each candidate is the same spec with a budget."""
    from moesd.engine.factory import ModelCache

    progress = progress or sys.stderr  # resolved now: a default bound at import would outlive a replaced stderr

    if max_kl is None and min_match is None:
        raise MoesdError("give a quality floor: --max-kl and/or --min-exact-match")
    for name, v in (("--max-kl", max_kl), ("--min-exact-match", min_match)):
        if v is not None and not math.isfinite(v):
            raise MoesdError(f"{name} must be a finite number, got {v}")
    if max_kl is not None and max_kl < 0 or min_match is not None and not 0 <= min_match <= 1:
        raise MoesdError("--max-kl must be >= 0 and --min-exact-match in [0, 1]")
    if min_match is not None and spec.temperature != 0:
        raise MoesdError("--min-exact-match compares greedy outputs: use temperature 0")
    if num_prompts < 1:
        raise MoesdError("--num-prompts must be >= 1")
    if spec.gamma < 1:
        raise MoesdError("calibration needs speculation: gamma >= 1")
    models = ModelCache()
    target = models.target(spec)
    if not target.is_moe:
        raise MoesdError(f"{spec.target} is dense: expert budgets need an MoE target")
    candidates = sorted(set(budgets or default_budgets(target.num_experts, target.top_k)))
    if candidates[0] < 1:
        raise MoesdError("budgets must be >= 1")

    work = load_workload(workload)
    eos = getattr(target.tokenizer, "eos_token_id", None)
    result = {"target": spec.target, "draft": spec.draft, "draft_method": spec.method, "workload": workload,
              "num_prompts": num_prompts, "gamma": spec.gamma, "temperature": spec.temperature, "mode": spec.budget_mode, "scope": spec.budget_scope,
              "routing": spec.routing, "num_experts": target.num_experts, "top_k": target.top_k,
              "floor": {"max_kl_per_token": max_kl, "min_token_match_rate": min_match},
              "max_new_tokens": max_new_tokens, "batch_sizes": {}}
    layer_load = None
    from moesd.progress import progress as bar

    meter = bar(total=len(batch_sizes), desc="budget calibrate", unit="batch size", quiet=quiet)
    for b in batch_sizes:
        # At least num_prompts prompts per batch size, so that B = 1 is not judged on one prompt.
        batches = [tokenize_prompts(target.tokenizer, batch_prompts(work, b, offset=i * b), chat, max_prompt_tokens)
                   for i in range(-(-max(num_prompts, b) // b))]

        def runs(budget):
            return [quality_run(spec.replace(expert_budget=budget), models, prompts, max_new_tokens, eos)
                    for prompts in batches]

        reference_runs = runs(None)
        for r in reference_runs:
            if "expert_load_per_layer" in r:
                layer_load = np.asarray(r["expert_load_per_layer"]) + (0 if layer_load is None else layer_load)
        ref = merge_runs(reference_runs)
        tried, chosen = [], None
        for c in candidates:
            if c >= target.num_experts:
                break
            if spec.budget_mode == "substitution" and c < target.top_k:
                continue
            q = compare(ref, merge_runs(runs(c)), spec.temperature)
            # No verify token at all (prompt lookup found nothing to verify): the budget never acted, so it
            # costs no quality here; its KL is reported as None.
            kl = q["mean_kl_per_token"]
            ok = (max_kl is None or kl is None or kl <= max_kl) and \
                 (min_match is None or q.get("token_match_rate", 0.0) >= min_match)
            tried.append({"budget": c, "passes": ok, **{k: q.get(k) for k in (
                "mean_kl_per_token", "token_match_rate", "acceptance_length_ratio", "alpha")}})
            print(f"B={b} C={c}: KL {float('nan') if kl is None else kl:.4f}, "
                  f"match {q.get('token_match_rate', float('nan')):.3f}"
                  f" -> {'pass' if ok else 'fail'}", file=progress, flush=True)
            if ok:
                chosen = c
                break
        result["batch_sizes"][str(b)] = {
            "budget": chosen, "prompts": sum(len(p) for p in batches), "reference_alpha": ref["acceptance"].alpha,
            "tried": tried, "note": None if chosen is not None else "no budget below E meets the floor: run unbudgeted"}
        meter.update(1)
    meter.close()
    result["static_order"] = [np.argsort(-row, kind="stable").tolist() for row in layer_load] \
        if layer_load is not None else None
    return result


def calibration_text(res: dict) -> str:
    floor = ", ".join(f"{k} {v}" for k, v in res["floor"].items() if v is not None)
    lines = [f"smallest budget meeting {floor} ({res['mode']}, {res['scope']}; E={res['num_experts']}, "
             f"K={res['top_k']}, gamma {res['gamma']}, {res['workload']}):",
             "| B | budget C | KL/token at C | token match at C | acceptance length ratio |", "|---|---|---|---|---|"]
    for b, row in res["batch_sizes"].items():
        last = row["tried"][-1] if row["tried"] else {}

        def f(k):
            return "-" if last.get(k) is None else f"{last[k]:.4f}"

        lines.append(f"| {b} | {row['budget'] if row['budget'] is not None else 'none (unbudgeted)'} | "
                     f"{f('mean_kl_per_token')} | {f('token_match_rate')} | {f('acceptance_length_ratio')} |")
    return "\n".join(lines) + "\n"


def write_calibration(res: dict, path: str) -> None:
    write_text_atomic(path, json.dumps(res, indent=1) + "\n")
