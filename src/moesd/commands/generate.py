from __future__ import annotations

from moesd import render
from moesd.bench.workloads import batch_prompts, load_workload, tokenize_prompts
from moesd.errors import MoesdError


def read_prompts(prompt: str | None, prompts_file: str | None, batch_size: int) -> list:
    """--prompt repeated B times, or the file's first B prompts (cycled if the file is shorter)."""
    if (prompt is None) == (prompts_file is None):
        raise MoesdError("give exactly one of --prompt and --prompts")
    if prompt is not None:
        if batch_size < 1:
            raise MoesdError(f"batch size must be >= 1, got {batch_size}")
        return [prompt] * batch_size
    return batch_prompts(load_workload(prompts_file), batch_size)


def run(spec_kw: dict, prompt: str | None, prompts_file: str | None, batch_size: int, max_new_tokens: int,
        chat: bool, as_json: bool) -> str:
    from moesd.engine.factory import EngineSpec, build_engine

    texts = read_prompts(prompt, prompts_file, batch_size)
    engine, target = build_engine(EngineSpec(**spec_kw))
    token_prompts = tokenize_prompts(target.tokenizer, texts, chat)
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
