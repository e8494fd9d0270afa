"""`moesd budget calibrate`."""

from __future__ import annotations

from moesd.atomic_io import check_writable
from moesd.commands.flags import HelpFormatter, subparsers, budget_mode_args, engine_model_args, int_list, workload_args
from moesd.errors import MoesdError
from moesd.progress import quiet_flag


HELP = "MoE-Spec expert budgets: pick the smallest budget that meets a quality floor"
EXAMPLES = 'examples:\n  moesd budget calibrate --target models/stdlib-moe-e32k4 --draft models/stdlib-draft --max-kl 0.05 -o budgets.json'


def add_arguments(p) -> None:
    bsub = subparsers(p, "budget_command")
    c = bsub.add_parser("calibrate", help="smallest budget per batch size meeting --max-kl / --min-exact-match",
                        description="smallest budget per batch size meeting --max-kl / --min-exact-match",
                        formatter_class=HelpFormatter, epilog=EXAMPLES)
    engine_model_args(c, draft_methods=("model", "ngram"))
    workload_args(c, max_new_tokens=32)
    c.add_argument("--batch-sizes", type=int_list, default=[1, 4, 16], help="batch sizes to calibrate")
    c.add_argument("--gamma", type=int, default=4, help="draft length")
    c.add_argument("--budgets", type=int_list, help="candidates (default: K, 2K, 4K, ... below E)")
    c.add_argument("--max-kl", type=float, help="floor: mean KL(full || budgeted) per verify token, nats")
    c.add_argument("--min-exact-match", type=float, help="floor: token match with unbudgeted SD at T=0")
    budget_mode_args(c)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    c.add_argument("--num-prompts", type=int, default=16, help="prompts judged per batch size (in batches of B)")
    c.add_argument("-o", "--output", help="JSON with the budget per batch size and the static expert order")
    quiet_flag(c)


def run(a) -> str:
    from moesd.bench.budget_calibrate import calibrate, calibration_text, write_calibration
    from moesd.engine.factory import EngineSpec

    if a.output:
        check_writable(a.output)
    if a.max_new_tokens < 2:
        raise MoesdError("--max-new-tokens must be >= 2")
    spec = EngineSpec(target=a.target, draft=a.draft, draft_method=a.draft_method, gamma=a.gamma,
                      temperature=a.temperature, seed=a.seed, device=a.device, dtype=a.dtype, routing=a.routing,
                      tokenizer=a.tokenizer, budget_mode=a.budget_mode, budget_scope=a.budget_scope,
                      kv_cache=a.kv_cache, cuda_graphs=a.cuda_graphs)
    res = calibrate(spec, a.workload, a.batch_sizes, a.budgets, a.max_kl, a.min_exact_match, a.max_new_tokens, a.chat,
                    a.max_prompt_tokens, a.num_prompts, quiet=a.quiet)
    if a.output:
        write_calibration(res, a.output)
    return calibration_text(res) + (f"wrote {a.output}\n" if a.output else "")
