"""`moesd train target|draft|distill`."""

from __future__ import annotations

import json

from moesd.errors import MoesdError


def parse_overrides(items: list[str] | None) -> dict:
    """--set key=value (JSON values: numbers, booleans, lists) for architecture changes."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MoesdError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(a) -> str:
    from moesd.train.loop import TrainSettings

    if a.steps < 1 or a.batch_size < 1 or a.seq_len < 2 or a.lr <= 0:
        raise MoesdError("--steps, --batch-size must be >= 1, --seq-len >= 2 and --lr > 0")
    if a.budget_minutes is not None and a.budget_minutes <= 0:
        raise MoesdError("--budget-minutes must be > 0")
    settings = TrainSettings(out=a.out, steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, lr=a.lr,
                             warmup_steps=min(a.warmup_steps, a.steps), seed=a.seed, budget_minutes=a.budget_minutes,
                             checkpoint_every_s=a.checkpoint_every, eval_every=a.eval_every,
                             eval_batches=a.eval_batches, threads=a.threads, resume=a.resume)
    overrides = parse_overrides(a.set)
    if a.kind == "distill":
        from moesd.train.runs import train_distill

        if a.teacher_every < 1:
            raise MoesdError("--teacher-every must be >= 1")
        info = train_distill(settings, a.corpus, a.max_files, a.teacher, a.draft_vocab, overrides, a.teacher_every)
    else:
        from moesd.train.runs import train_lm

        info = train_lm(a.kind, settings, a.corpus, a.max_files, a.vocab_size, a.tokenizer, overrides)
    v = info["final_validation"]
    extra = "".join(f", {k} {v[k]:.3f}" for k in ("perplexity", "greedy_agreement", "expected_acceptance_t1") if k in v)
    return (f"wrote {a.out}: {info['steps_done']}/{info['steps_planned']} steps ({info['stopped_by']}), "
            f"{info['tokens_seen']:,} tokens in {info['train_minutes']} min; validation loss {v['loss']:.3f}{extra}\n")
