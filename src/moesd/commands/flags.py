"""Flag types and the flag groups several subcommands share, declared once."""

from __future__ import annotations

import argparse

from moesd.errors import MoesdError
from moesd.engine.options import BUDGET_MODES, BUDGET_SCOPES, DRAFT_METHODS, KV_CACHES, ROUTINGS

class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2) like every other input error."""

    def error(self, message: str):
        prog = self.prog.removeprefix("moesd").strip()
        raise MoesdError(f"{prog}: {message}" if prog else message)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default shown beside its help (not the empty ones: no value, a flag left off);
    examples (the epilog) printed as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def subparsers(parser: argparse.ArgumentParser, dest: str):
    return parser.add_subparsers(dest=dest, required=True, parser_class=Parser)


PAPER_BATCH_SIZES = "1,2,4,8,12,16,20,24,28,32,36,40,44,48,52,56,60,80,100"


MAX_LIST = 65536  # longer lists (e.g. 1-1000000000) would exhaust memory before anything is computed


def int_list(text: str) -> list[int]:
    """'1,2,4' or ranges '1-8' or mixed '1-4,8,16'."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi - lo + 1 + len(out) > MAX_LIST:
                    raise argparse.ArgumentTypeError(f"{text!r} has more than {MAX_LIST} values")
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if len(out) > MAX_LIST:
        raise argparse.ArgumentTypeError(f"{text!r} has more than {MAX_LIST} values")
    if not out:
        raise argparse.ArgumentTypeError(f"empty list: {text!r}")
    return out


def float_list(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"empty list: {text!r}")
    return out


def scenario_args(p: argparse.ArgumentParser) -> None:
    """The performance model's inputs (predict, schedule)."""
    p.add_argument("--target", required=True, help="preset name or config.json path / model directory")
    p.add_argument("--draft", help="draft model: preset or config.json (with --draft-kind model, the default)")
    p.add_argument("--draft-kind", choices=["model", "eagle", "mtp", "ngram"],
                   help="model (a separate LM, --draft), eagle (one-layer head on the target's hidden states), "
                        "mtp (one target layer, MoE included), ngram (prompt lookup, no cost); "
                        "default: model with --draft, else ngram")
    p.add_argument("--hardware", required=True, help="hardware preset (see `moesd presets`) or JSON file")
    p.add_argument("--engine", help="execution profile: roofline, cuda-graph (vLLM v1 / SGLang / TensorRT-LLM), "
                                    "vllm-v0 (as the paper ran it), hf-eager, cpu; default cuda-graph on GPUs, "
                                    "cpu on a CPU")
    p.add_argument("--tp", type=int, default=1, help="target tensor-parallel degree (draft stays on one device)")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel degree within the TP group")
    p.add_argument("--gamma", type=int_list, help="draft lengths, e.g. 2,3,4 or 1-8 (default 1-8, or the "
                                                  "acceptance curve's)")
    p.add_argument("--context-length", type=int, default=1024,
                   help="tokens each sequence holds in its KV cache (prompt + generated): KV bytes per step and "
                        "the memory check; 0 ignores the KV cache")
    p.add_argument("--kv-dtype", default="bf16", choices=["bf16", "fp16", "fp8", "fp32"], help="KV-cache dtype")
    acc = p.add_mutually_exclusive_group(required=True)
    acc.add_argument("--alpha", type=float,
                     help="per-token acceptance probability (the paper's alpha; NOT vLLM's acceptance rate); "
                          "sigma follows gamma via Eq. 5")
    acc.add_argument("--acceptance-rate", type=float,
                     help="vLLM's acceptance rate: accepted / draft tokens, measured at --measured-at-gamma "
                          "(converted to alpha: 0.55 at gamma 4 is alpha 0.78)")
    acc.add_argument("--mean-acceptance-length", type=float,
                     help="tokens per round counting the bonus token (vLLM's and SGLang's 'acceptance length'), "
                          "measured at --measured-at-gamma (converted to alpha)")
    acc.add_argument("--sigma", type=float, help="tokens per round / (gamma+1), held fixed across gamma (the "
                                                 "paper's tables)")
    acc.add_argument("--acceptance-curve", help="JSON: mean acceptance length per gamma, or vLLM's per-position "
                                                "acceptance; the best gamma is chosen from it")
    p.add_argument("--measured-at-gamma", type=int,
                   help="the draft length --acceptance-rate / --mean-acceptance-length were measured at "
                        "(default: --gamma when it is a single value)")
    p.add_argument("--force", action="store_true", help="apply --params fitted for another target or hardware")
    p.add_argument("--experts-per-token", type=int, help="override top-K (the paper's sparsity sweep)")
    p.add_argument("--expert-budget", type=int, help="cap distinct experts per layer in verify (MoE-Spec)")
    p.add_argument("--params", help="fitted parameters from `moesd fit` (default: physical prior)")
    p.add_argument("--routing-curve", help="measured distinct-experts curve JSON instead of Eq. 8")
    p.add_argument("--verify-tokens", choices=["engine", "paper"],
                   help="tokens per sequence in a verify pass: gamma+1 (engine, default) or gamma (paper)")
    p.add_argument("--bandwidth-efficiency", type=float, help="fraction of peak bandwidth reached (default 1)")
    p.add_argument("--flops-efficiency", type=float, help="fraction of peak FLOP/s reached (default 1)")


def scenario_kw(a: argparse.Namespace) -> dict:
    return dict(target=a.target, hardware=a.hardware, draft=a.draft, tp=a.tp, ep=a.ep,
                experts_per_token=a.experts_per_token, expert_budget=a.expert_budget, params_file=a.params,
                routing_curve=a.routing_curve, verify_convention=a.verify_tokens,
                bandwidth_efficiency=a.bandwidth_efficiency, flops_efficiency=a.flops_efficiency, engine=a.engine,
                draft_kind=a.draft_kind, context_length=a.context_length, kv_dtype=a.kv_dtype, force=a.force)


def acceptance_and_gammas(a: argparse.Namespace):
    """The acceptance input (exactly one was given) and the draft lengths to evaluate."""
    from moesd.perf.acceptance_curve import AcceptanceCurve
    from moesd.perf.prediction import Acceptance

    curve = AcceptanceCurve.from_file(a.acceptance_curve) if a.acceptance_curve else None
    gammas = a.gamma or (curve.gammas if curve else list(range(1, 9)))
    if curve is not None:
        missing = [g for g in gammas if g not in curve.mean_acceptance_length]
        if missing:
            raise MoesdError(f"the acceptance curve has no point at gamma {missing} (it has {curve.gammas})")
    at = a.measured_at_gamma
    if at is None and (a.acceptance_rate is not None or a.mean_acceptance_length is not None):
        if len(set(gammas)) != 1:
            raise MoesdError("--acceptance-rate / --mean-acceptance-length depend on the draft length they were "
                             "measured at: give --measured-at-gamma (or a single --gamma)")
        at = gammas[0]
    return Acceptance(alpha=a.alpha, sigma=a.sigma, acceptance_rate=a.acceptance_rate,
                      mean_acceptance_length=a.mean_acceptance_length, at_gamma=at, curve=curve), gammas


def engine_model_args(p: argparse.ArgumentParser, draft_methods=DRAFT_METHODS, routing_list: bool = False) -> None:
    """Target, draft and how they run (generate, bench, budget calibrate)."""
    p.add_argument("--target", required=True,
                   help="model directory, .gguf, smollm2-135m-instruct, or (random weights) preset / config.json")
    p.add_argument("--draft", help="draft model (same sources as --target)")
    p.add_argument("--draft-method", choices=list(draft_methods),
                   help="default: model with --draft, else none")
    p.add_argument("--dtype", default="bf16", help="bf16 (timing), fp16, or fp32 (exactness)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--kv-cache", default="static", choices=list(KV_CACHES),
                   help="static: preallocated, slot = position (default); ragged: transformers' DynamicCache with "
                        "rejected slots masked (models that mix attention kinds always use it)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="capture decode/verify/draft forwards as CUDA graphs (needs --device cuda and the static cache)")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling, random weights and uniform routing")
    if routing_list:
        p.add_argument("--routing", default="model", help=f"comma list of {', '.join(ROUTINGS)}")
    else:
        p.add_argument("--routing", default="model", choices=list(ROUTINGS),
                       help="model, or uniform (i.i.d. top-K; random-weight timing)")
    p.add_argument("--tokenizer", help="tokenizer directory for random-weight models (default: bytes)")
    p.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")


def budget_mode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget-mode", choices=list(BUDGET_MODES), default="substitution",
                   help="substitution: tokens re-pick inside the shortlist; truncation: experts outside contribute 0")
    p.add_argument("--budget-scope", choices=list(BUDGET_SCOPES), default="batch",
                   help="shortlist per verify forward (batch) or per sequence")


def workload_args(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    p.add_argument("--workload", default="humaneval", help="humaneval, mtbench or a JSONL file")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="tokens to generate per prompt")
    p.add_argument("--max-prompt-tokens", type=int, help="keep only the last N prompt tokens")
