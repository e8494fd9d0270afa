"""Quality of a budgeted verifier, always reported beside its speed (MoE-Spec is not lossless).

Compared with unbudgeted SD on the same prompts, seed and draft: the mean acceptance length, the
exact-match rate of the generated tokens (meaningful at temperature 0, where unbudgeted SD
reproduces the target's greedy output), the mean per-token KL(full target || budgeted target) on
the verify tokens (the same verify blocks re-run unbudgeted, untimed), and optionally HumanEval
pass@1.
"""

from __future__ import annotations


def token_match(reference: list[list[int]], candidate: list[list[int]]) -> dict:
    """Position-wise agreement over the reference's tokens, and whole-sequence agreement."""
    same = total = 0
    for ref, cand in zip(reference, candidate):
        total += len(ref)
        same += sum(1 for a, b in zip(ref, cand) if a == b)
    # Agreement before the first difference: after it, the two continue from different contexts.
    prefix = [next((i for i, (a, b) in enumerate(zip(r, c)) if a != b), min(len(r), len(c)))
              for r, c in zip(reference, candidate)]
    return {"token_match_rate": same / max(total, 1),
            "sequence_match_rate": sum(r == c for r, c in zip(reference, candidate)) / max(len(reference), 1),
            "mean_matching_prefix_tokens": sum(prefix) / max(len(prefix), 1)}


def quality_run(spec, models, prompts, max_new_tokens: int, eos) -> dict:
    """One untimed generation of `spec` (engine/factory.py); with a budget it also measures KL to the
    unbudgeted target. The prefill runs apart (budgets never apply to it)."""
    from moesd.engine import phases
    from moesd.engine.factory import build_engine

    spec = spec.replace(measure_kl=spec.expert_budget is not None, merge_prefill=False)
    res = build_engine(spec, models).generate(prompts, max_new_tokens, eos)
    out = {"token_ids": res.token_ids, "acceptance": res.acceptance}
    if res.experts is not None:
        loads = [res.experts.layer_load[p] for p in (phases.VERIFY, phases.DECODE) if p in res.experts.layer_load]
        if loads:  # tokens routed to each expert per layer: MoE-Spec's static ranking counts
            out["expert_load_per_layer"] = sum(loads)
    if res.kl_per_token is not None:
        out["kl_sum"], out["kl_tokens"] = float(res.kl_per_token.sum()), int(res.kl_per_token.numel())
    return out


def merge_runs(runs: list[dict]) -> dict:
    """Several batches' quality runs as one: outputs concatenated, acceptance counts and KL sums added."""
    from moesd.perf.acceptance_counts import AcceptanceCounts

    out = {"token_ids": [ids for r in runs for ids in r["token_ids"]],
           "acceptance": AcceptanceCounts.total(r["acceptance"] for r in runs)}
    if all("kl_tokens" in r for r in runs):
        out["kl_sum"], out["kl_tokens"] = sum(r["kl_sum"] for r in runs), sum(r["kl_tokens"] for r in runs)
    return out


def _mean_kl(run: dict) -> float | None:
    return run["kl_sum"] / run["kl_tokens"] if run.get("kl_tokens") else None


def compare(reference: dict, budgeted: dict, temperature: float) -> dict:
    acc, ref = budgeted["acceptance"], reference["acceptance"]
    out = {"mean_kl_per_token": _mean_kl(budgeted),
           "mean_acceptance_length": acc.mean_acceptance_length,
           "reference_mean_acceptance_length": ref.mean_acceptance_length,
           "acceptance_length_ratio": acc.mean_acceptance_length / ref.mean_acceptance_length,
           "alpha": acc.alpha, "reference_alpha": ref.alpha}
    if temperature == 0:
        out.update(token_match(reference["token_ids"], budgeted["token_ids"]))
    for key in ("pass_at_1",):
        if key in budgeted:
            out[key], out["reference_" + key] = budgeted[key], reference.get(key)
    return out
