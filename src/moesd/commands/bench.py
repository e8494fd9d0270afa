from __future__ import annotations

import argparse

from moesd.commands.flags import budget_mode_args, engine_model_args, float_list, int_list, workload_args
from moesd.errors import MoesdError
from moesd.progress import quiet_flag


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


def _gammas(text: str) -> list:
    """'2,4' -> [2, 4]; 'auto' among them adds the adaptive series."""
    parts = [x.strip().lower() for x in text.split(",")]
    fixed = ",".join(x for x in parts if x != "auto")
    out: list = int_list(fixed) if fixed else []
    return out + ["auto"] if "auto" in parts else out


HELP = "sweep B x gamma x K x temperature x routing; one JSON line per point"
EXAMPLES = 'examples:\n  moesd bench --target benchmarks/configs/cpu_moe_e64k8.json --draft benchmarks/configs/cpu_draft.json \\\n      --draft-method synthetic --alpha 0.44 --routing uniform --batch-sizes 1,4,16 --gammas 2,4 -o r.jsonl\n  moesd bench ... -o r.jsonl --resume'


def add_arguments(p) -> None:
    engine_model_args(p, draft_methods=("model", "ngram", "synthetic"), routing_list=True)
    p.add_argument("--alpha", type=float, help="acceptance probability for --draft-method synthetic")
    p.add_argument("--batch-sizes", type=int_list, required=True, help="e.g. 1,4,16 or 1-8")
    p.add_argument("--gammas", type=_gammas, required=True,
                   help="draft lengths, e.g. 2,4; add auto for one more series whose gamma the engine chooses every "
                        "step (0..the largest listed), e.g. 1,2,4,auto")
    p.add_argument("--experts-per-token", type=int_list, help="sparsity sweep: top-K values")
    p.add_argument("--temperatures", type=float_list, default=(0.0,), help="comma list, e.g. 0,1")
    workload_args(p, max_new_tokens=32)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per point (medians and IQRs)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the repeats")
    p.add_argument("--experts-implementation", default="grouped_mm", help="grouped_mm or eager")
    p.add_argument("--upcycle", type=int, metavar="E", help="measure the dense target's MoE twin with E experts")
    p.add_argument("--hardware", help="hardware preset recorded for `moesd fit` (default: cpu on CPU)")
    p.add_argument("--expert-budgets", help="MoE-Spec budgets C to sweep, e.g. 4,8,16 (unbudgeted SD is the reference)")
    budget_mode_args(p)
    p.add_argument("--execute-code", action="store_true",
                   help="score HumanEval pass@1 per budget (runs generated code in a subprocess with a timeout)")
    p.add_argument("-o", "--output", required=True, help="results JSONL")
    p.add_argument("--resume", action="store_true", help="continue an existing results file (same settings)")
    p.add_argument("--append", action="store_true",
                   help="add a sweep with other settings to an existing results file, as a second series")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip corrupt lines of a resumed file")
    quiet_flag(p)


def run(a: argparse.Namespace) -> str:
    from moesd.bench.sweep import BenchConfig, run_sweep

    cfg = BenchConfig(
        target=a.target, workload=a.workload, batch_sizes=tuple(a.batch_sizes),
        gammas=tuple(g for g in a.gammas if g != "auto"), auto_gamma="auto" in a.gammas,
        draft=a.draft, draft_method=a.draft_method, alpha=a.alpha,
        experts_per_token=tuple(a.experts_per_token) if a.experts_per_token else (None,),
        temperatures=tuple(a.temperatures), routings=tuple(r.strip() for r in a.routing.split(",")),
        repeats=a.repeats, warmup=a.warmup, max_new_tokens=a.max_new_tokens, max_prompt_tokens=a.max_prompt_tokens,
        dtype=a.dtype, device=a.device, seed=a.seed, experts_implementation=a.experts_implementation, chat=a.chat,
        upcycle_experts=a.upcycle, hardware=a.hardware or ("cpu" if a.device == "cpu" else None),
        tokenizer=a.tokenizer, expert_budgets=_budgets(a.expert_budgets), budget_mode=a.budget_mode,
        budget_scope=a.budget_scope, execute_code=a.execute_code, kv_cache=a.kv_cache, cuda_graphs=a.cuda_graphs,
    )
    results = run_sweep(cfg, a.output, a.resume, a.skip_bad_lines, append=a.append, quiet=a.quiet)
    return f"{len(results.records)} points in {a.output}\n"
