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


def quality_run(target, proposer, gamma: int, sampling, seed: int, routing: str, budget, prompts, max_new_tokens: int,
                eos) -> dict:
    """One untimed generation; with a budget it also measures KL to the unbudgeted target."""
    from moesd.engine.spec_engine import SpecEngine

    engine = SpecEngine(target, proposer, gamma, sampling, seed, routing, budget=budget,
                        measure_kl=budget is not None, merge_prefill=False)
    res = engine.generate(prompts, max_new_tokens, eos)
    acc = res.metrics["acceptance"]
    out = {"token_ids": res.token_ids, "mean_acceptance_length": acc["mean_acceptance_length"], "alpha": acc["alpha"],
           "num_drafts": acc["num_drafts"]}
    phases = res.metrics.get("experts", {}).get("phases", {})
    loads = [phases[p]["expert_load_per_layer"] for p in ("verify", "decode") if p in phases]
    if loads:  # tokens routed to each expert per layer: MoE-Spec's static ranking counts
        out["expert_load_per_layer"] = [[sum(col) for col in zip(*rows)] for rows in zip(*loads)]
    if budget is not None:
        out["mean_kl_per_token"] = res.metrics["budget"]["mean_kl_per_token"]
        out["kl_tokens"] = res.metrics["budget"]["kl_tokens"]
    return out


def merge_runs(runs: list[dict]) -> dict:
    """Several batches' quality runs as one: outputs concatenated, acceptance weighted by rounds,
    KL weighted by verify tokens."""
    drafts = sum(r["num_drafts"] for r in runs)
    out = {"token_ids": [ids for r in runs for ids in r["token_ids"]], "num_drafts": drafts,
           "mean_acceptance_length": sum(r["mean_acceptance_length"] * r["num_drafts"] for r in runs) / max(drafts, 1),
           "alpha": sum(r["alpha"] * r["num_drafts"] for r in runs) / max(drafts, 1)}
    if all("kl_tokens" in r for r in runs):
        n = sum(r["kl_tokens"] for r in runs)
        out["kl_tokens"] = n
        out["mean_kl_per_token"] = sum((r["mean_kl_per_token"] or 0.0) * r["kl_tokens"] for r in runs) / max(n, 1)
    return out


def compare(reference: dict, budgeted: dict, temperature: float) -> dict:
    out = {"mean_kl_per_token": budgeted.get("mean_kl_per_token"),
           "mean_acceptance_length": budgeted["mean_acceptance_length"],
           "reference_mean_acceptance_length": reference["mean_acceptance_length"],
           "acceptance_length_ratio": budgeted["mean_acceptance_length"] / reference["mean_acceptance_length"],
           "alpha": budgeted["alpha"], "reference_alpha": reference["alpha"]}
    if temperature == 0:
        out.update(token_match(reference["token_ids"], budgeted["token_ids"]))
    for key in ("pass_at_1",):
        if key in budgeted:
            out[key], out["reference_" + key] = budgeted[key], reference.get(key)
    return out
