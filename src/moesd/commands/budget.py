"""`moesd budget calibrate`."""

from __future__ import annotations

from moesd.errors import MoesdError


def run(a) -> str:
    from moesd.bench.budget_calibrate import calibrate, calibration_text, write_calibration
    from moesd.engine.factory import EngineSpec

    if a.max_new_tokens < 2:
        raise MoesdError("--max-new-tokens must be >= 2")
    spec = EngineSpec(target=a.target, draft=a.draft, draft_method=a.draft_method, gamma=a.gamma,
                      temperature=a.temperature, seed=a.seed, device=a.device, dtype=a.dtype, routing=a.routing,
                      tokenizer=a.tokenizer, budget_mode=a.budget_mode, budget_scope=a.budget_scope)
    res = calibrate(spec, a.workload, a.batch_sizes, a.budgets, a.max_kl, a.min_exact_match, a.max_new_tokens, a.chat,
                    a.max_prompt_tokens, a.num_prompts)
    if a.output:
        write_calibration(res, a.output)
    return calibration_text(res) + (f"wrote {a.output}\n" if a.output else "")
