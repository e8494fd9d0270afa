"""Engine facts quoted in docs/results.md sections 7-8 that are not timings:

1. SmolLM2-135M-Instruct drafting for itself (gamma 4, greedy, 32 tokens): acceptance in fp32 and bf16, and
   whether speculative, autoregressive and transformers' generate() outputs agree in each dtype.
2. Forwards per generation at B = 1, gamma 4, 32 tokens: ours vs transformers assisted generation, for the
   self-draft and a tiny random draft (counted with forward pre-hooks on each model).

Usage: .venv/bin/python benchmarks/engine_checks.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from moesd.engine.loading import load_model
from moesd.engine.proposers import DraftModelProposer
from moesd.engine.spec_engine import SpecEngine

PROMPT = "Write a Python function that checks whether a number is prime."
TINY = dict(model_type="llama", vocab_size=49152, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192, tie_word_embeddings=True)


def chat_ids(tok) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    return tok.encode(text, add_special_tokens=False)


def self_draft(dtype: str) -> None:
    t = load_model("smollm2-135m-instruct", dtype=dtype)
    prompt = chat_ids(t.tokenizer)
    ar = SpecEngine(t, None, 0).generate([prompt], 32).token_ids[0]
    sd = SpecEngine(t, DraftModelProposer(t, t.vocab_size), 4).generate([prompt], 32)
    hf = t.model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):].tolist()
    print(f"1. {dtype}: self-draft alpha {sd.metrics['acceptance']['alpha']:.3f}; SD == AR: {sd.token_ids[0] == ar}; "
          f"AR == generate(): {ar == hf}")


def forward_counts(tmp: Path) -> None:
    target = load_model("smollm2-135m-instruct", dtype="bf16")
    (tmp / "config.json").write_text(json.dumps(TINY))
    tiny = load_model(str(tmp), dtype="bf16", seed=2, random_weights=True)
    prompt = chat_ids(target.tokenizer)
    for label, draft in (("self-draft", target), ("tiny random draft", tiny)):
        counts: dict[str, int] = {}
        models = {"target": target.model} if draft is target else {"target": target.model, "draft": draft.model}
        hooks = [m.register_forward_pre_hook(lambda *_, n=n: counts.__setitem__(n, counts.get(n, 0) + 1))
                 for n, m in models.items()]
        try:
            with torch.no_grad():
                target.model.generate(torch.tensor([prompt]), assistant_model=draft.model, max_new_tokens=32,
                                      min_new_tokens=32, do_sample=False, num_assistant_tokens=4,
                                      num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0,
                                      pad_token_id=target.tokenizer.eos_token_id)
            theirs = dict(counts)
            counts.clear()
            SpecEngine(target, DraftModelProposer(draft, target.vocab_size), 4).generate([prompt], 32)
            ours = dict(counts)
        finally:
            for h in hooks:
                h.remove()
        note = " (one model: target and draft forwards together)" if draft is target else ""
        print(f"2. {label}: forwards, assisted generation {theirs}, moesd {ours}{note}")


def main() -> None:
    self_draft("fp32")
    self_draft("bf16")
    with tempfile.TemporaryDirectory() as tmp:
        forward_counts(Path(tmp))


if __name__ == "__main__":
    main()
