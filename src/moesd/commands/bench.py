from __future__ import annotations

import argparse

from moesd.errors import MoesdError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise MoesdError(f"not a list of numbers: {text!r}") from None


def _budgets(text: str | None) -> tuple:
    """'none,4,8' -> (None, 4, 8); the unbudgeted reference is always included."""
    if not text:
        return (None,)
    out: list = [None]
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("", "none"):
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise MoesdError(f"--expert-budgets expects integers or 'none', got {part!r}") from None
    return tuple(out)


def run(a: argparse.Namespace) -> str:
    from moesd.bench.sweep import BenchConfig, run_sweep

    cfg = BenchConfig(
        target=a.target, workload=a.workload, batch_sizes=tuple(a.batch_sizes), gammas=tuple(a.gammas),
        draft=a.draft, draft_method=a.draft_method, alpha=a.alpha,
        experts_per_token=tuple(a.experts_per_token) if a.experts_per_token else (None,),
        temperatures=_floats(a.temperatures), routings=tuple(r.strip() for r in a.routing.split(",")),
        repeats=a.repeats, warmup=a.warmup, max_new_tokens=a.max_new_tokens, max_prompt_tokens=a.max_prompt_tokens,
        dtype=a.dtype, device=a.device, seed=a.seed, experts_implementation=a.experts_implementation, chat=a.chat,
        upcycle_experts=a.upcycle, hardware=a.hardware or ("cpu" if a.device == "cpu" else None),
        tokenizer=a.tokenizer, expert_budgets=_budgets(a.expert_budgets), budget_mode=a.budget_mode,
        budget_scope=a.budget_scope, execute_code=a.execute_code,
    )
    results = run_sweep(cfg, a.output, a.resume, a.skip_bad_lines)
    return f"{len(results.records)} points in {a.output}\n"
