"""`moesd train target|draft|distill`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from moesd.atomic_io import check_writable
from moesd.errors import MoesdError
from moesd.progress import quiet_flag


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


HELP = "train the shipped small models: stdlib MoE target, its draft, a SmolLM2 distilled draft"
EXAMPLES = 'examples:\n  moesd train target --out models/my-moe --steps 2000 --budget-minutes 30\n  moesd train target --out models/my-moe --steps 2000 --resume'


def add_arguments(p) -> None:
    p.add_argument("kind", choices=["target", "draft", "distill"], help="what to train")
    p.add_argument("--out", required=True, help="model directory (checkpoints go to OUT/.checkpoint)")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps; the LR schedule spans them")
    p.add_argument("--budget-minutes", type=float, help="stop early after this much training time (summed over resumes)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=50, help="linear LR warm-up steps")
    p.add_argument("--seed", type=int, default=0, help="seeds initialisation and batches")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--checkpoint-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation passes")
    p.add_argument("--eval-batches", type=int, default=8, help="batches per validation pass")
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
    quiet_flag(p)


def run(a) -> str:
    from moesd.train.loop import TrainSettings

    if a.steps < 1 or a.batch_size < 1 or a.seq_len < 2 or not (math.isfinite(a.lr) and a.lr > 0):
        raise MoesdError("--steps, --batch-size must be >= 1, --seq-len >= 2 and --lr a finite number > 0")
    if a.budget_minutes is not None and not (math.isfinite(a.budget_minutes) and a.budget_minutes > 0):
        raise MoesdError("--budget-minutes must be a finite number > 0")
    if not (math.isfinite(a.checkpoint_every) and a.checkpoint_every >= 0) or a.eval_every < 1 or a.eval_batches < 1:
        raise MoesdError("--checkpoint-every must be >= 0 (0: every step), --eval-every and --eval-batches >= 1")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise MoesdError(f"--out {out} is a file, not a directory")
    if not out.exists():
        check_writable(out)
    settings = TrainSettings(out=a.out, steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, lr=a.lr,
                             warmup_steps=min(a.warmup_steps, a.steps), seed=a.seed, budget_minutes=a.budget_minutes,
                             checkpoint_every_s=a.checkpoint_every, eval_every=a.eval_every,
                             eval_batches=a.eval_batches, threads=a.threads, resume=a.resume, quiet=a.quiet)
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
