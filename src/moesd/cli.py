"""`moesd` command line: parse arguments and dispatch to `moesd.commands`; nothing else."""

from __future__ import annotations

import argparse
import sys

from moesd.errors import MoesdError

PAPER_BATCH_SIZES = "1,2,4,8,12,16,20,24,28,32,36,40,44,48,52,56,60,80,100"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2) like every other input error."""

    def error(self, message: str):
        raise MoesdError(f"{self.prog}: {message}")


def int_list(text: str) -> list[int]:
    """'1,2,4' or ranges '1-8' or mixed '1-4,8,16'."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"empty list: {text!r}")
    return out


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="preset name or config.json path / model directory")
    p.add_argument("--draft", help="draft preset or config.json (omit for model-free drafting: zero draft cost)")
    p.add_argument("--hardware", required=True, help="hardware preset (see `moesd presets`) or JSON file")
    p.add_argument("--tp", type=int, default=1, help="target tensor-parallel degree (draft stays on one device)")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel degree within the TP group")
    p.add_argument("--gamma", type=int_list, default=list(range(1, 9)), help="draft lengths, e.g. 2,3,4 or 1-8")
    acc = p.add_mutually_exclusive_group(required=True)
    acc.add_argument("--alpha", type=float, help="acceptance rate; sigma follows gamma via Eq. 5")
    acc.add_argument("--sigma", type=float, help="tokens per round / (gamma+1), held fixed across gamma")
    p.add_argument("--experts-per-token", type=int, help="override top-K (the paper's sparsity sweep)")
    p.add_argument("--expert-budget", type=int, help="cap distinct experts per layer in verify (MoE-Spec)")
    p.add_argument("--params", help="fitted parameters from `moesd fit` (default: physical prior)")
    p.add_argument("--routing-curve", help="measured distinct-experts curve JSON instead of Eq. 8")
    p.add_argument("--verify-tokens", choices=["engine", "paper"],
                   help="tokens per sequence in a verify pass: gamma+1 (engine, default) or gamma (paper)")
    p.add_argument("--bandwidth-efficiency", type=float, help="fraction of peak bandwidth reached (default 1)")
    p.add_argument("--flops-efficiency", type=float, help="fraction of peak FLOP/s reached (default 1)")


def _scenario_kw(a: argparse.Namespace) -> dict:
    return dict(target=a.target, hardware=a.hardware, draft=a.draft, tp=a.tp, ep=a.ep,
                experts_per_token=a.experts_per_token, expert_budget=a.expert_budget, params_file=a.params,
                routing_curve=a.routing_curve, verify_convention=a.verify_tokens,
                bandwidth_efficiency=a.bandwidth_efficiency, flops_efficiency=a.flops_efficiency)


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expert-budget", type=int, help="MoE-Spec: cap experts per layer per verify forward (not lossless)")
    p.add_argument("--budget-mode", choices=["substitution", "truncation"], default="substitution")
    p.add_argument("--budget-scope", choices=["batch", "sequence"], default="batch")
    p.add_argument("--budget-static", help="`moesd budget calibrate` JSON: rank experts by its static order")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moesd", description="Speculative decoding on Mixture-of-Experts: predict, fit, schedule.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("presets", help="list model and hardware presets")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("experts", help="expected distinct experts N(t), tokens per expert, T_thres")
    p.add_argument("--num-experts", type=int)
    p.add_argument("--top-k", type=int)
    p.add_argument("--target", help="take E and K from a preset or config.json")
    p.add_argument("--tokens", type=int_list, default=[1, 2, 4, 8, 16, 32, 64, 128])
    p.add_argument("--tau", type=float, default=0.95)
    p.add_argument("--routing-curve")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot")

    p = sub.add_parser("predict", help="predicted SD speedup over batch sizes and draft lengths")
    _model_args(p)
    p.add_argument("--batch-sizes", type=int_list, default=int_list(PAPER_BATCH_SIZES))
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="write a PNG of speedup and target efficiency vs batch size")

    p = sub.add_parser("schedule", help="best gamma per batch size as vLLM's dynamic SD table")
    _model_args(p)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--format", choices=["vllm", "table"], default="vllm")
    p.add_argument("-o", "--output")

    p = sub.add_parser("fit", help="fit Algorithm 1's parameters to measurements (JSONL or CSV)")
    p.add_argument("measurements")
    p.add_argument("--target")
    p.add_argument("--draft")
    p.add_argument("--hardware")
    p.add_argument("--tp", type=int)
    p.add_argument("--verify-tokens", choices=["engine", "paper"], default="engine")
    p.add_argument("--stride", type=int, help="fit every N-th point (sorted by K, gamma, B), test on the rest")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip malformed JSONL lines instead of stopping")
    p.add_argument("--routing", choices=["uniform", "model"],
                   help="bench output: fit only this routing's points (model: N(t) from the measured curves)")
    p.add_argument("--load-bound-factor", type=float, default=5.0,
                   help="fit loads within [bytes/bandwidth, factor x that] (paper App. C.2: 5)")
    p.add_argument("-o", "--output", help="write the fitted parameters (JSON) for `predict --params`")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("generate", help="batched speculative decoding on a Hugging Face model (needs the engine extra)")
    p.add_argument("--target", required=True,
                   help="model directory, .gguf, smollm2-135m-instruct, or (random weights) preset / config.json")
    p.add_argument("--draft", help="draft model (same sources as --target)")
    p.add_argument("--draft-method", choices=["model", "ngram", "synthetic", "none"])
    p.add_argument("--alpha", type=float, help="acceptance rate for --draft-method synthetic")
    p.add_argument("--gamma", type=int, default=4, help="draft length; 0 = autoregressive baseline")
    p.add_argument("--batch-size", type=int, default=1)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt")
    src.add_argument("--prompts", help="JSONL: {\"prompt\": ...} or {\"token_ids\": [...]} per line")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bf16", help="bf16 (timing) or fp32 (exactness)")
    p.add_argument("--experts-per-token", type=int, help="override top-K (num_experts_per_tok)")
    p.add_argument("--experts-implementation", default="grouped_mm", help="grouped_mm or eager")
    p.add_argument("--routing", default="model", help="model, or uniform (i.i.d. top-K; random-weight timing)")
    p.add_argument("--random-weights", action="store_true", help="ignore weights in a model directory")
    p.add_argument("--tokenizer", help="tokenizer directory for random-weight models (default: bytes)")
    p.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    _budget_args(p)
    p.add_argument("--measure-kl", action="store_true",
                   help="with --expert-budget: KL(full || budgeted) per verify token (re-runs each verify block)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="sweep B x gamma x K x temperature x routing; one JSON line per point")
    p.add_argument("--target", required=True)
    p.add_argument("--draft")
    p.add_argument("--draft-method", choices=["model", "ngram", "synthetic"])
    p.add_argument("--alpha", type=float, help="acceptance rate for --draft-method synthetic")
    p.add_argument("--batch-sizes", type=int_list, required=True)
    p.add_argument("--gammas", type=int_list, required=True)
    p.add_argument("--experts-per-token", type=int_list, help="sparsity sweep: top-K values")
    p.add_argument("--temperatures", default="0", help="comma list, e.g. 0,1")
    p.add_argument("--routing", default="model", help="model, uniform, or model,uniform")
    p.add_argument("--workload", default="humaneval", help="humaneval, mtbench or a JSONL file")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-prompt-tokens", type=int, help="keep only the last N prompt tokens")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--experts-implementation", default="grouped_mm")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--upcycle", type=int, metavar="E", help="measure the dense target's MoE twin with E experts")
    p.add_argument("--hardware", help="hardware preset recorded for `moesd fit` (default: cpu on CPU)")
    p.add_argument("--tokenizer", help="tokenizer directory for random-weight models")
    p.add_argument("--expert-budgets", help="MoE-Spec budgets C to sweep, e.g. 4,8,16 (unbudgeted SD is the reference)")
    p.add_argument("--budget-mode", choices=["substitution", "truncation"], default="substitution")
    p.add_argument("--budget-scope", choices=["batch", "sequence"], default="batch")
    p.add_argument("--execute-code", action="store_true",
                   help="score HumanEval pass@1 per budget (runs generated code in a subprocess with a timeout)")
    p.add_argument("-o", "--output", required=True, help="results JSONL")
    p.add_argument("--resume", action="store_true", help="continue an existing results file")
    p.add_argument("--skip-bad-lines", action="store_true")

    p = sub.add_parser("report", help="markdown tables and PNG figures from `moesd bench` results")
    p.add_argument("results", nargs="+", help="one or more results JSONL files")
    p.add_argument("-o", "--output", required=True, help="directory for report.md and the figures")
    p.add_argument("--skip-bad-lines", action="store_true")

    p = sub.add_parser("budget", help="MoE-Spec expert budgets: pick the smallest budget that meets a quality floor")
    bsub = p.add_subparsers(dest="budget_command", required=True, parser_class=_Parser)
    p = bsub.add_parser("calibrate", help="smallest budget per batch size meeting --max-kl / --min-exact-match")
    p.add_argument("--target", required=True)
    p.add_argument("--draft")
    p.add_argument("--draft-method", choices=["model", "ngram"])
    p.add_argument("--workload", default="humaneval")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 4, 16])
    p.add_argument("--gamma", type=int, default=4)
    p.add_argument("--budgets", type=int_list, help="candidates (default: K, 2K, 4K, ... below E)")
    p.add_argument("--max-kl", type=float, help="floor: mean KL(full || budgeted) per verify token, nats")
    p.add_argument("--min-exact-match", type=float, help="floor: token match with unbudgeted SD at T=0")
    p.add_argument("--budget-mode", choices=["substitution", "truncation"], default="substitution")
    p.add_argument("--budget-scope", choices=["batch", "sequence"], default="batch")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--routing", default="model")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer")
    p.add_argument("--chat", action="store_true")
    p.add_argument("--max-prompt-tokens", type=int, help="keep only the last N prompt tokens")
    p.add_argument("--num-prompts", type=int, default=16, help="prompts judged per batch size (in batches of B)")
    p.add_argument("-o", "--output", help="JSON with the budget per batch size and the static expert order")

    p = sub.add_parser("train", help="train the shipped small models: stdlib MoE target, its draft, a SmolLM2 distilled draft")
    p.add_argument("kind", choices=["target", "draft", "distill"])
    p.add_argument("--out", required=True, help="model directory (checkpoints go to OUT/.checkpoint)")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps; the LR schedule spans them")
    p.add_argument("--budget-minutes", type=float, help="stop early after this much training time (summed over resumes)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--checkpoint-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation passes")
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--corpus", help="directory of .py files (default: this interpreter's standard library)")
    p.add_argument("--max-files", type=int, help="use only the first N corpus files (smoke runs)")
    p.add_argument("--vocab-size", type=int, default=4096, help="target: BPE vocabulary to train")
    p.add_argument("--tokenizer", help="draft: the target's directory (shares its tokenizer)")
    p.add_argument("--teacher", default="smollm2-135m-instruct", help="distill: the model to imitate")
    p.add_argument("--draft-vocab", type=int, default=8192, help="distill: most frequent teacher tokens kept")
    p.add_argument("--teacher-every", type=int, default=1,
                   help="distill: teacher KL every N-th step, corpus cross-entropy on the others")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="architecture override, e.g. num_experts=8")

    p = sub.add_parser("calibrate", help="measure this machine's bandwidth and GEMM peak into a hardware JSON")
    p.add_argument("-o", "--output", help="hardware JSON to write (use it as --hardware FILE)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--numpy", action="store_true", help="measure with numpy fp32 even if torch is installed")
    return parser


def dispatch(a: argparse.Namespace) -> str:
    if a.command == "presets":
        from moesd.commands import presets

        return presets.run(a.json)
    if a.command == "experts":
        from moesd.commands import experts

        return experts.run(a.num_experts, a.top_k, a.tokens, a.tau, a.target, a.routing_curve, a.json, a.plot)
    if a.command == "predict":
        from moesd.commands import predict

        return predict.run(_scenario_kw(a), a.batch_sizes, a.gamma, a.alpha, a.sigma, a.json, a.plot)
    if a.command == "schedule":
        from moesd.commands import schedule

        return schedule.run(_scenario_kw(a), a.max_batch_size, a.gamma, a.alpha, a.sigma, a.format, a.output)
    if a.command == "fit":
        from moesd.commands import fit

        return fit.run(a.measurements, a.target, a.draft, a.hardware, a.tp, a.verify_tokens, a.stride,
                       a.skip_bad_lines, a.output, a.json, a.load_bound_factor, a.routing)
    if a.command == "generate":
        from moesd.commands import generate

        spec = dict(target=a.target, draft=a.draft, draft_method=a.draft_method, alpha=a.alpha, gamma=a.gamma,
                    temperature=a.temperature, top_p=a.top_p, seed=a.seed, device=a.device, dtype=a.dtype,
                    experts_per_token=a.experts_per_token, experts_implementation=a.experts_implementation,
                    routing=a.routing, random_weights=True if a.random_weights else None, tokenizer=a.tokenizer,
                    expert_budget=a.expert_budget, budget_mode=a.budget_mode, budget_scope=a.budget_scope,
                    budget_static=a.budget_static, measure_kl=a.measure_kl)
        return generate.run(spec, a.prompt, a.prompts, a.batch_size, a.max_new_tokens, a.chat, a.json)
    if a.command == "bench":
        from moesd.commands import bench

        return bench.run(a)
    if a.command == "report":
        from moesd.bench.report import write_report

        files = write_report(a.results, a.output, a.skip_bad_lines)
        return "".join(f"wrote {a.output}/{f}\n" for f in files)
    if a.command == "budget":
        from moesd.commands import budget

        return budget.run(a)
    if a.command == "train":
        from moesd.commands import train

        return train.run(a)
    if a.command == "calibrate":
        from moesd.commands import calibrate

        return calibrate.run(a.output, a.repeats, a.threads, a.numpy)
    raise AssertionError(a.command)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        sys.stdout.write(dispatch(args))
    except MoesdError as exc:
        print(f"moesd: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"moesd: error: {exc.name or exc} is not installed; the engine needs pip install -e '.[engine]'",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
