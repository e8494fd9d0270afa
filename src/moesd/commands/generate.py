from __future__ import annotations

from moesd import render
from moesd.commands.flags import budget_mode_args, engine_model_args
from moesd.progress import quiet_flag
from moesd.bench.workloads import load_workload, tokenize_prompts
from moesd.errors import MoesdError


MAX_BATCH_SIZE = 4096  # rows beyond this exhaust memory long before they could be measured


def read_prompts(prompt: str | None, prompts_file: str | None, batch_size: int) -> list:
    """--prompt repeated B times, or every prompt of the file (run B at a time)."""
    if (prompt is None) == (prompts_file is None):
        raise MoesdError("give exactly one of --prompt and --prompts")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise MoesdError(f"batch size must lie in 1..{MAX_BATCH_SIZE}, got {batch_size}")
    if prompt is not None:
        return [prompt] * batch_size
    return list(load_workload(prompts_file).prompts)


HELP = "batched speculative decoding on a Hugging Face model (needs the engine extra)"
EXAMPLES = "examples:\n  moesd generate --target smollm2-135m-instruct --draft-method ngram --gamma 4 --chat --prompt 'Hi'\n  moesd generate --target models/stdlib-moe-e32k4 --draft models/stdlib-draft --prompts p.jsonl --batch-size 8 --json"


def add_arguments(p) -> None:
    engine_model_args(p)
    p.add_argument("--alpha", type=float, help="acceptance probability for --draft-method synthetic")
    p.add_argument("--gamma", type=gamma_or_auto, default=4,
                   help="draft length; 0 = autoregressive baseline; auto = chosen every step from predicted cost and "
                        "observed acceptance, 0..--max-gamma (lossless)")
    p.add_argument("--max-gamma", type=int, default=8, help="with --gamma auto: the longest draft it may choose")
    p.add_argument("--params", help="with --gamma auto: `moesd fit` parameters pricing the steps (default: the "
                                    "physical prior for this model and --hardware, rescaled by what the run measures)")
    p.add_argument("--hardware", help="with --gamma auto: hardware of the prior (default: cpu, or the GPU's preset)")
    p.add_argument("--alpha-max", type=float,
                   help="--draft-method synthetic: each request's acceptance probability drawn uniformly from "
                        "[--alpha, --alpha-max] (requests differ, as real prompts do)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="sequences decoded together; with --prompts every prompt runs, B at a time, a finished "
                        "row taking the next prompt (continuous batching)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt, repeated --batch-size times")
    src.add_argument("--prompts", help="JSONL: {\"prompt\": ...} or {\"token_ids\": [...]} per line")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per sequence")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    p.add_argument("--experts-per-token", type=int, help="override top-K (num_experts_per_tok)")
    p.add_argument("--experts-implementation", default="grouped_mm", help="grouped_mm or eager")
    p.add_argument("--random-weights", action="store_true", help="ignore weights in a model directory")
    p.add_argument("--expert-budget", type=int,
                   help="MoE-Spec: cap experts per layer per verify forward (not lossless)")
    budget_mode_args(p)
    p.add_argument("--budget-static", help="`moesd budget calibrate` JSON: rank experts by its static order")
    p.add_argument("--measure-kl", action="store_true",
                   help="with --expert-budget: KL(full || budgeted) per verify token (re-runs each verify block)")
    p.add_argument("--json", action="store_true", help="outputs and every metric as JSON")
    quiet_flag(p)


def gamma_or_auto(text: str):
    """An integer draft length, or "auto"."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer or 'auto': {text!r}") from None


gamma_or_auto.__name__ = "gamma (an integer or auto)"


def run(a) -> str:
    from moesd.engine.factory import EngineSpec

    auto = a.gamma == "auto"
    if not auto and a.max_gamma != 8:
        raise MoesdError("--max-gamma bounds --gamma auto; give --gamma auto")
    spec = EngineSpec(target=a.target, draft=a.draft, draft_method=a.draft_method, alpha=a.alpha,
                      alpha_max=a.alpha_max, gamma=a.max_gamma if auto else a.gamma, adaptive_gamma=auto,
                      cost_params=a.params, hardware=a.hardware,
                      temperature=a.temperature, top_p=a.top_p, seed=a.seed, device=a.device, dtype=a.dtype,
                      experts_per_token=a.experts_per_token, experts_implementation=a.experts_implementation,
                      routing=a.routing, random_weights=True if a.random_weights else None, tokenizer=a.tokenizer,
                      expert_budget=a.expert_budget, budget_mode=a.budget_mode, budget_scope=a.budget_scope,
                      budget_static=a.budget_static, measure_kl=a.measure_kl, kv_cache=a.kv_cache,
                      cuda_graphs=a.cuda_graphs)
    return _run(spec, a.prompt, a.prompts, a.batch_size, a.max_new_tokens, a.chat, a.json, a.quiet)


def _run(spec, prompt: str | None, prompts_file: str | None, batch_size: int, max_new_tokens: int,
         chat: bool, as_json: bool, quiet: bool = False) -> str:
    from moesd.engine.factory import build_engine

    from moesd.progress import progress

    texts = read_prompts(prompt, prompts_file, batch_size)
    engine = build_engine(spec)
    target = engine.target
    token_prompts = tokenize_prompts(target.tokenizer, texts, chat)
    for ids in token_prompts:
        if any(not 0 <= t < target.vocab_size for t in ids):
            raise MoesdError(f"prompt token ids must lie in [0, {target.vocab_size})")
    meter = progress(total=len(token_prompts), desc="generate", unit="seq", quiet=quiet)
    try:
        result = engine.generate(token_prompts, max_new_tokens, getattr(target.tokenizer, "eos_token_id", None),
                                 batch_size=batch_size, on_finish=meter.update)
    finally:
        meter.close()
    outputs = [{"prompt": t if isinstance(t, str) else None, "text": target.tokenizer.decode(ids),
                "token_ids": ids, "finish_reason": r}
               for t, ids, r in zip(texts, result.token_ids, result.finish_reasons)]
    if as_json:
        return render.to_json({"outputs": outputs, "metrics": result.metrics})
    return render.generation_text(outputs, result.metrics)
