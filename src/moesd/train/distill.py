"""Distillation objective: KL(teacher restricted to the draft vocabulary || draft).

Why restricted: the draft can only put mass on its own tokens; what it loses is the teacher's mass
outside the subset (1.3 % of corpus tokens for 8,192 of SmolLM2's 49,152), which no draft in that
vocabulary could match anyway. Minimising this KL drives q towards p on the subset, which is what
speculative sampling's acceptance sum(min(p, q)) rewards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moesd.engine.vocab_map import VocabMap
from moesd.train.loop import Objective


def distill_objective(teacher: torch.nn.Module, vmap: VocabMap, teacher_every: int = 1) -> Objective:
    """`teacher_every` N > 1: only every N-th step pays for a teacher forward (135 M parameters,
    ~30x the draft's cost); the steps between learn the corpus's own next tokens (cross-entropy on
    the draft vocabulary, tokens outside it ignored), so the draft sees N x more text per hour."""
    subset = torch.from_numpy(vmap.target_ids)
    to_draft = torch.from_numpy(vmap.to_draft)
    inside = torch.zeros(vmap.target_vocab, dtype=torch.bool)
    inside[subset] = True

    def teacher_logits(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return teacher(input_ids=x).logits.float()

    def loss(model, batch, step):
        x = batch[:, :-1]
        if step % teacher_every:
            y = batch[:, 1:]
            labels = torch.where(inside[y], to_draft[y], torch.full_like(y, -100))
            logits = model(input_ids=to_draft[x]).logits.float()
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        log_p = F.log_softmax(teacher_logits(x)[..., subset], dim=-1)
        log_q = F.log_softmax(model(input_ids=to_draft[x]).logits.float(), dim=-1)
        return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1).mean()

    def evaluate(model, batches):
        kl = agree = accept = 0.0
        n = 0
        for b in batches:
            x = b[:, :-1]
            full = teacher_logits(x)
            p_full = full.softmax(-1)
            log_p = F.log_softmax(full[..., subset], dim=-1)
            draft = model(input_ids=to_draft[x]).logits.float()
            log_q = F.log_softmax(draft, dim=-1)
            kl += F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1).sum().item()
            agree += (full.argmax(-1) == subset[draft.argmax(-1)]).sum().item()
            # Speculative sampling's acceptance at temperature 1: sum over tokens of min(p, q).
            accept += torch.minimum(p_full[..., subset], log_q.exp()).sum(-1).sum().item()
            n += x.numel()
        return {"loss": kl / n, "greedy_agreement": agree / n, "expected_acceptance_t1": accept / n}

    return Objective(loss, evaluate, {"kind": "KL(teacher on draft vocabulary || draft)"
                                      + (f" every {teacher_every} steps, corpus cross-entropy between"
                                         if teacher_every > 1 else ""),
                                      "draft_vocab": int(len(subset)), "teacher_every": teacher_every})
