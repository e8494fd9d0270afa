"""The training loop shared by `moesd train target|draft|distill`.

Deterministic: batch b of step s is drawn from a generator seeded by (seed, s), so a resumed run
reads exactly the batches an uninterrupted one would. The learning-rate schedule is defined over
`steps`; `budget_minutes` (summed over resumes) only stops early, and the model written then is
whatever was reached, recorded as such. A checkpoint (weights, optimizer, step, elapsed time, and
a fingerprint of everything that defines the run) is written atomically every
`checkpoint_every_s`, so a killed run loses at most that much work.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from moesd.atomic_io import write_text_atomic
from moesd.errors import MoesdError

CHECKPOINT = ".checkpoint/state.pt"


@dataclass
class TrainSettings:
    out: str
    steps: int
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    seed: int = 0
    budget_minutes: float | None = None
    checkpoint_every_s: float = 120.0
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    threads: int | None = None
    resume: bool = False
    quiet: bool = False  # no progress bar

    def fingerprint(self) -> dict:
        """What must match for a resume to continue the same run (not the budget or intervals)."""
        keep = ("steps", "batch_size", "seq_len", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "seed")
        return {k: getattr(self, k) for k in keep}


@dataclass
class TokenStream:
    """A corpus as one long array of token ids; batches are random windows of seq_len + 1."""
    train: np.ndarray
    valid: np.ndarray

    def batch(self, step: int, seed: int, batch_size: int, seq_len: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        starts = torch.randint(0, len(self.train) - seq_len - 1, (batch_size,), generator=g)
        return torch.stack([torch.from_numpy(self.train[s: s + seq_len + 1].astype(np.int64)) for s in starts.tolist()])

    def valid_batches(self, n: int, batch_size: int, seq_len: int) -> list[torch.Tensor]:
        """Fixed, evenly spaced validation windows (the same ones at every evaluation)."""
        width = seq_len + 1
        total = min(n * batch_size, max(1, (len(self.valid) - 1) // width))
        starts = np.linspace(0, len(self.valid) - width - 1, total).astype(np.int64)
        windows = [torch.from_numpy(self.valid[s: s + width].astype(np.int64)) for s in starts]
        return [torch.stack(windows[i: i + batch_size]) for i in range(0, len(windows), batch_size)]


def encode_texts(tokenizer, texts: list[str], eos_id: int) -> np.ndarray:
    ids: list[int] = []
    for chunk in range(0, len(texts), 64):
        for row in tokenizer(texts[chunk: chunk + 64], add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            ids.append(eos_id)
    return np.asarray(ids, dtype=np.int32)


def lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = min(1.0, (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise MoesdError(f"output directory {out} is not writable: {exc.strerror or exc}") from None


@dataclass
class Objective:
    """What one kind of training optimises: `loss(model, batch, step)` for the step, `evaluate(model,
    batches)` for validation numbers (a dict; its "loss" is the headline)."""
    loss: object
    evaluate: object
    describe: dict = field(default_factory=dict)


def train(model: torch.nn.Module, stream: TokenStream, objective: Objective, s: TrainSettings,
          fingerprint: dict, export, extra_info: dict | None = None) -> dict:
    """Run (or resume) training; `export(model, info)` writes the final model. Returns the info
    (also written to OUT/training.json), with `extra_info` merged in."""
    out = Path(s.out)
    check_writable(out)
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    fingerprint = dict(fingerprint, settings=s.fingerprint())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.95))
    ckpt = out / CHECKPOINT
    step, elapsed_s, log = 0, 0.0, []
    if s.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["fingerprint"] != fingerprint:
            diff = sorted(k for k in set(state["fingerprint"]) | set(fingerprint)
                          if state["fingerprint"].get(k) != fingerprint.get(k))
            raise MoesdError(f"checkpoint {ckpt} is from a different run (differs in: {', '.join(diff)}); "
                             f"use another --out or drop --resume")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, elapsed_s, log = state["step"], state["elapsed_s"], state["log"]
        print(f"resumed at step {step} ({elapsed_s / 60:.1f} min done)", file=sys.stderr)
    elif ckpt.is_file():
        raise MoesdError(f"{out} already holds a training checkpoint; pass --resume to continue it")
    for name, part in (("training", stream.train), ("validation", stream.valid)):
        if len(part) < s.seq_len + 2:
            raise MoesdError(f"the {name} corpus has {len(part)} tokens, fewer than --seq-len {s.seq_len} + 2: "
                             f"use a larger corpus or a shorter --seq-len")
    valid = stream.valid_batches(s.eval_batches, s.batch_size, s.seq_len)

    def save_checkpoint() -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                    "elapsed_s": elapsed_s, "fingerprint": fingerprint, "log": log}, tmp)
        os.replace(tmp, ckpt)

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            res = objective.evaluate(model, valid)
        model.train()
        res.update(step=step, tokens=step * s.batch_size * s.seq_len, elapsed_s=round(elapsed_s, 1))
        log.append(res)
        return res

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    model.train()
    budget_s = s.budget_minutes * 60 if s.budget_minutes else math.inf
    last_ckpt = t_mark = time.perf_counter()
    recent: list[float] = []
    stopped = "steps"
    from moesd.progress import progress

    meter = progress(total=s.steps, desc="train", unit="step", quiet=s.quiet)
    meter.update(step)
    try:
        if step == 0:
            print(f"step 0 validation {_fmt(evaluate())}", file=sys.stderr)
        while step < s.steps:
            if elapsed_s >= budget_s:
                stopped = "budget"
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, s)
            batch = stream.batch(step, s.seed, s.batch_size, s.seq_len)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = objective.loss(model, batch, step)
            if not torch.isfinite(loss):
                raise MoesdError(f"loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            meter.update(1)
            now = time.perf_counter()
            elapsed_s += now - t_mark
            t_mark = now
            recent.append(loss.item())
            if step % s.log_every == 0:
                tok_s = step * s.batch_size * s.seq_len / max(elapsed_s, 1e-9)
                print(f"step {step}/{s.steps} loss {np.mean(recent):.3f} lr {lr_at(step - 1, s):.2e} "
                      f"{tok_s:,.0f} tok/s {elapsed_s / 60:.1f} min", file=sys.stderr)
                recent = []
            if step % s.eval_every == 0:
                print(f"step {step} validation {_fmt(evaluate())}", file=sys.stderr)
                t_mark = time.perf_counter()  # evaluation time is not training time
            if time.perf_counter() - last_ckpt >= s.checkpoint_every_s:
                save_checkpoint()
                last_ckpt = t_mark = time.perf_counter()
    except KeyboardInterrupt:
        save_checkpoint()
        print(f"interrupted at step {step}; checkpoint saved, continue with --resume", file=sys.stderr)
        raise
    finally:
        meter.close()
        signal.signal(signal.SIGTERM, previous)
    final = evaluate() if not log or log[-1]["step"] != step else log[-1]
    save_checkpoint()
    info = {"steps_done": step, "steps_planned": s.steps, "stopped_by": stopped,
            "tokens_seen": step * s.batch_size * s.seq_len, "train_minutes": round(elapsed_s / 60, 2),
            "final_validation": final, "validation_log": log, "settings": asdict(s),
            "fingerprint": fingerprint, "objective": objective.describe,
            "command": "moesd " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("moesd") else None,
            **(extra_info or {})}
    export(model, info)
    write_text_atomic(out / "training.json", json.dumps(info, indent=1) + "\n")
    return info


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _fmt(res: dict) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in res.items() if isinstance(v, float) and k != "elapsed_s")


def lm_objective(num_experts: int) -> Objective:
    """Next-token cross-entropy, plus the router's load-balancing loss for an MoE (its coefficient
    comes from the config, as transformers applies it)."""

    def loss(model, batch, step):
        out = model(input_ids=batch[:, :-1], output_router_logits=num_experts > 1)
        logits = out.logits.float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        if num_experts > 1 and out.aux_loss is not None:
            ce = ce + model.config.router_aux_loss_coef * out.aux_loss
        return ce

    def evaluate(model, batches):
        total, n = 0.0, 0
        for b in batches:
            logits = model(input_ids=b[:, :-1]).logits.float()
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1),
                                                       reduction="sum").item()
            n += b[:, 1:].numel()
        ce = total / n
        return {"loss": ce, "perplexity": math.exp(ce)}

    return Objective(loss, evaluate, {"kind": "next-token cross-entropy" + (" + load-balancing loss" if num_experts > 1 else "")})
