"""Engine speed on the CPU (issue "Batched, lossless SD engine"), bf16, torch threads = cores.

1. Time outside model forwards at B = 8, gamma = 4 on the CPU MoE of docs/notes/offline.md section 6 (Qwen3-MoE,
   hidden 1024, 8 layers, E = 64, K = 8, 1.7 GB bf16, random weights) with a small random dense draft.
   Goal: <= 5 % of step time.
2. Autoregressive tokens/s through the engine vs transformers `generate()` on the same model and
   batch. Goal: ratio >= 1.
3. B = 1 SD vs transformers assisted generation (`assistant_model`, constant gamma) on the same pair,
   SmolLM2-135M-Instruct as target. Goal: >= 1.2x. Two drafts: the target itself (every draft accepted)
   and a tiny random draft (almost nothing accepted), so both extremes of the bookkeeping are covered.

Medians over repeats after a warm-up. Usage: python benchmarks/bench_engine.py [--quick] [--parts 123]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from moesd.bench.timing import median_seconds
from moesd.engine.loading import load_model
from moesd.engine.proposers import DraftModelProposer, left_pad
from moesd.engine.spec_engine import SpecEngine

MOE = dict(model_type="qwen3_moe", vocab_size=8192, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
           num_attention_heads=16, num_key_value_heads=4, head_dim=64, moe_intermediate_size=512, num_experts=64,
           num_experts_per_tok=8, norm_topk_prob=True, max_position_embeddings=4096, tie_word_embeddings=False)
DRAFT = dict(model_type="qwen3", vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
             tie_word_embeddings=True)
TINY_SMOLLM_DRAFT = dict(model_type="llama", vocab_size=49152, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192, tie_word_embeddings=True)


def write_config(d: Path, name: str, cfg: dict) -> str:
    p = d / name
    p.mkdir()
    (p / "config.json").write_text(json.dumps(cfg))
    return str(p)


def outside_forward(d: Path, repeats: int, new_tokens: int, parts: str = "12") -> None:
    target = load_model(write_config(d, "moe", MOE), dtype="bf16", seed=0, random_weights=True)
    draft = load_model(write_config(d, "draft", DRAFT), dtype="bf16", seed=1, random_weights=True)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 8192, (128,), generator=g).tolist() for _ in range(8)]
    if "1" not in parts:
        engine_vs_generate(target, prompts, repeats, new_tokens)
        return
    fractions, step_ms, verify_ms = [], [], []
    for r in range(repeats + 1):
        res = SpecEngine(target, DraftModelProposer(draft, 8192), 4).generate(prompts, new_tokens)
        st = res.metrics["stages"]
        if r == 0:
            continue  # warm-up
        fractions.append(st["outside_forward_fraction"])
        step_ms.append(1e3 * st["total_s"] / st["steps"])
        verify_ms.append(1e3 * st["target_verify_s"])
    print(f"1. outside model forwards, B=8 gamma=4, {new_tokens} new tokens, CPU MoE 1.7 GB bf16: median "
          f"{100 * statistics.median(fractions):.2f} % of step time (runs: "
          + ", ".join(f"{100 * f:.2f}" for f in fractions) + f"); step {statistics.median(step_ms):.1f} ms, "
          f"verify {statistics.median(verify_ms):.1f} ms; goal <= 5 %")
    if "2" in parts:
        engine_vs_generate(target, prompts, repeats, new_tokens)


def engine_vs_generate(target, prompts, repeats: int, new_tokens: int) -> None:
    ids, valid = left_pad(prompts, torch.device("cpu"))

    def hf():
        with torch.no_grad():
            target.model.generate(ids, attention_mask=valid.long(), max_new_tokens=new_tokens, do_sample=False,
                                  min_new_tokens=new_tokens, pad_token_id=0)

    # Interleaved (hf, static, ragged) rounds, so drift in this machine's speed hits all three alike.
    runs = {"generate()": hf,
            "static": lambda: SpecEngine(target, None, 0, kv_cache="static").generate(prompts, new_tokens),
            "ragged": lambda: SpecEngine(target, None, 0, kv_cache="ragged").generate(prompts, new_tokens)}
    times = {k: [] for k in runs}
    for r in range(repeats + 1):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if r:  # round 0 is the warm-up
                times[k].append(time.perf_counter() - t0)
    t = {k: statistics.median(v) for k, v in times.items()}
    tokens = len(prompts) * new_tokens
    print(f"2. autoregressive, B={len(prompts)}, {new_tokens} new tokens: transformers generate() "
          f"{tokens / t['generate()']:.1f} tok/s; engine, static KV cache {tokens / t['static']:.1f} tok/s "
          f"(ratio {t['generate()'] / t['static']:.2f}, goal >= 1), ragged KV cache {tokens / t['ragged']:.1f} tok/s "
          f"(ratio {t['generate()'] / t['ragged']:.2f})")


def vs_assisted(d: Path, repeats: int, new_tokens: int) -> None:
    target = load_model("smollm2-135m-instruct", dtype="bf16")
    tiny = load_model(write_config(d, "tiny", TINY_SMOLLM_DRAFT), dtype="bf16", seed=2, random_weights=True)
    tok = target.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "Write a Python function that checks whether a "
                                     "number is prime."}], add_generation_prompt=True, tokenize=False)
    prompt = tok.encode(text, add_special_tokens=False)
    ids = torch.tensor([prompt])
    for label, draft in (("self-draft (fp32 accepts all; bf16 alpha 0.96)", target), ("tiny random draft (~none accepted)", tiny)):
        for gamma in (2, 4):
            def hf():
                with torch.no_grad():
                    target.model.generate(ids, assistant_model=draft.model, max_new_tokens=new_tokens,
                                          min_new_tokens=new_tokens, do_sample=False, num_assistant_tokens=gamma,
                                          num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0,
                                          pad_token_id=tok.eos_token_id)

            def ours():
                SpecEngine(target, DraftModelProposer(draft, target.vocab_size), gamma).generate([prompt], new_tokens)

            t_hf, t_ours = median_seconds(hf, repeats), median_seconds(ours, repeats)
            print(f"3. B=1 SD vs assisted generation, SmolLM2-135M + {label}, gamma {gamma}, {new_tokens} tokens: "
                  f"engine {new_tokens / t_ours:.1f} tok/s, assisted {new_tokens / t_hf:.1f} tok/s, "
                  f"ratio {t_hf / t_ours:.2f} (goal >= 1.2)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and tokens (smoke run)")
    ap.add_argument("--parts", default="123", help="which of the three measurements to run, e.g. 2")
    args = ap.parse_args()
    repeats, new_tokens = (1, 8) if args.quick else (5, 32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
          f"median of {repeats} after 1 warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if "1" in args.parts or "2" in args.parts:
            outside_forward(d, repeats, new_tokens, args.parts)
        if "3" in args.parts:
            vs_assisted(d, repeats, new_tokens)


if __name__ == "__main__":
    main()
