"""Tokenized prompt-length ranges of the offline workloads (the paper: 38-391 HumanEval, 5-356 MT-bench,
with Qwen2's tokenizer), here with SmolLM2-135M-Instruct's tokenizer, raw and chat-templated."""

from __future__ import annotations

from moesd.bench.workloads import length_stats, load_workload, tokenize_prompts
from moesd.engine.loading import load_model


def main() -> None:
    tok = load_model("smollm2-135m-instruct", dtype="bf16").tokenizer
    print("| workload | prompts | raw tokens min / median / max | chat-templated min / median / max |")
    print("|---|---|---|---|")
    for name in ("humaneval", "mtbench"):
        w = load_workload(name)
        raw = length_stats(tokenize_prompts(tok, list(w.prompts), chat=False))
        chat = length_stats(tokenize_prompts(tok, list(w.prompts), chat=True))
        print(f"| {name} | {raw['prompts']} | {raw['min_tokens']} / {raw['median_tokens']} / {raw['max_tokens']} | "
              f"{chat['min_tokens']} / {chat['median_tokens']} / {chat['max_tokens']} |")


if __name__ == "__main__":
    main()
