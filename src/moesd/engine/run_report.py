"""The report of one `generate` call (`GenerationResult.metrics`): its settings, stage times, steps, cache, target,
and where they apply the gamma policy's summary, acceptance, expert budget and expert counts."""

from __future__ import annotations

import torch

from moesd.engine.metrics import stage_summary, steps_as_dicts
from moesd.engine.run_state import RunState
from moesd.engine.static_kv import StaticKV


def run_metrics(engine, run: RunState, longest: int) -> dict:
    """`engine`: the SpecEngine that ran `run`; `longest`: its longest prompt, in tokens."""
    metrics = {
        "gamma": engine.gamma,
        "batch_size": run.batch_size,
        "num_prompts": len(run.outputs),
        "draft_method": run.proposer.kind if run.proposer is not None else "none",
        "temperature": engine.sampling.temperature,
        "top_p": engine.sampling.top_p,
        "prefill_s": run.prefill_s,
        # Target KV slots per row, holes included: bounded by compaction, not by the step count.
        "cache": {"kind": "static" if isinstance(run.kv, StaticKV) else "ragged",
                  "max_slots": run.max_slots, "longest_prompt": longest,
                  "compact_threshold": run.kv.compact_threshold},
        "stages": stage_summary(run.steps, None if run.policy is not None else engine.gamma, run.prefill_s,
                                sum(len(o) for o in run.outputs)),
        "steps": steps_as_dicts(run.steps),
        "target": {"name": engine.target.name, "experts_implementation": engine.target.experts_implementation,
                   "num_experts": engine.target.num_experts, "top_k": engine.target.top_k,
                   "routing": engine.routing if engine.target.is_moe else None,
                   "dtype": str(engine.target.dtype).replace("torch.", ""), "device": str(run.device),
                   "random_weights": engine.target.random_weights},
    }
    if engine.cuda_graphs:
        metrics["cuda_graphs"] = (run.graphs.summary() if run.graphs is not None else
                                  {"off_reason": "expert budgets rank experts on the host: forwards ran eagerly"})
    if run.policy is not None:
        metrics["gamma"] = "auto"
        metrics["adaptive"] = run.policy.summary()
    if engine.gamma > 0:
        metrics["acceptance"] = run.acceptance.summary()
        if run.proposer.kind == "synthetic":
            metrics["note"] = "synthetic acceptance: outputs are not target text"
    if engine.budget is not None:
        kl = torch.cat(run.budget_kl) if run.budget_kl else torch.zeros(0)
        metrics["budget"] = {"budget": engine.budget.budget, "mode": engine.budget.mode, "scope": engine.budget.scope,
                             "ranking": engine.budget.ranking, "lossless": False,
                             "kl_tokens": int(kl.numel()),
                             "mean_kl_per_token": float(kl.mean()) if kl.numel() else None}
    if run.experts is not None:
        metrics["experts"] = run.experts.summary()
        metrics["routing_curve"] = run.experts.routing_curve()
    return metrics
