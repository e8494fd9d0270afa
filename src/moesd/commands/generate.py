from __future__ import annotations

import json
from pathlib import Path

from moesd import render
from moesd.errors import MoesdError


def read_prompts(prompt: str | None, prompts_file: str | None, batch_size: int) -> list:
    """Text prompts (or token-id lists) for the batch: --prompt repeated, or the file's first B lines
    (cycled if the file is shorter). JSONL lines: {"prompt": str} | {"text": str} | {"token_ids": [...]} | str."""
    if batch_size < 1:
        raise MoesdError(f"batch size must be >= 1, got {batch_size}")
    if (prompt is None) == (prompts_file is None):
        raise MoesdError("give exactly one of --prompt and --prompts")
    if prompt is not None:
        return [prompt] * batch_size
    items = []
    try:
        lines = Path(prompts_file).read_text().splitlines()
    except OSError as exc:
        raise MoesdError(f"cannot read prompts file {prompts_file}: {exc.strerror}") from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MoesdError(f"{prompts_file}:{i}: malformed JSON line ({exc})") from None
        if isinstance(rec, dict):
            rec = rec.get("token_ids", rec.get("prompt", rec.get("text")))
        if not (isinstance(rec, str) or (isinstance(rec, list) and all(isinstance(t, int) for t in rec))):
            raise MoesdError(f"{prompts_file}:{i}: expected a prompt string or token_ids list")
        items.append(rec)
    if not items:
        raise MoesdError(f"{prompts_file}: no prompts")
    return [items[i % len(items)] for i in range(batch_size)]


def tokenize(tokenizer, prompts: list, chat: bool) -> list[list[int]]:
    out = []
    for p in prompts:
        if isinstance(p, list):
            out.append(p)
        elif chat:
            if not getattr(tokenizer, "chat_template", None):
                raise MoesdError("--chat needs a tokenizer with a chat template")
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=False)
            out.append(tokenizer.encode(text, add_special_tokens=False))
        else:
            out.append(tokenizer.encode(p, add_special_tokens=False))
    return out


def run(spec_kw: dict, prompt: str | None, prompts_file: str | None, batch_size: int, max_new_tokens: int,
        chat: bool, as_json: bool) -> str:
    from moesd.engine.factory import EngineSpec, build_engine

    texts = read_prompts(prompt, prompts_file, batch_size)
    engine, target = build_engine(EngineSpec(**spec_kw))
    token_prompts = tokenize(target.tokenizer, texts, chat)
    for ids in token_prompts:
        if any(not 0 <= t < target.vocab_size for t in ids):
            raise MoesdError(f"prompt token ids must lie in [0, {target.vocab_size})")
    result = engine.generate(token_prompts, max_new_tokens, getattr(target.tokenizer, "eos_token_id", None))
    outputs = [{"prompt": t if isinstance(t, str) else None, "text": target.tokenizer.decode(ids),
                "token_ids": ids, "finish_reason": r}
               for t, ids, r in zip(texts, result.token_ids, result.finish_reasons)]
    if as_json:
        return render.to_json({"outputs": outputs, "metrics": result.metrics})
    return render.generation_text(outputs, result.metrics)
