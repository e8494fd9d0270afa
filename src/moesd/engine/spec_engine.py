"""The batched speculative-decoding loop (gamma = 0 gives the autoregressive baseline).

Each step, for the B active sequences: the proposer drafts gamma tokens per row; the target scores
B x (gamma + 1) tokens (the last emitted token plus the drafts) in one forward; rejection sampling
(or greedy matching) accepts a per-row prefix and emits one more token; the target cache keeps only
the accepted slots of each row. Sequences that hit EOS or their token limit leave the batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from moesd.engine.expert_hooks import ExpertRecorder
from moesd.engine.loading import LoadedModel
from moesd.engine.metrics import AcceptanceStats, ExpertStats, StageClock, StepRecord, stage_summary, steps_as_dicts
from moesd.engine.proposers import left_pad
from moesd.engine.ragged_kv import RaggedKV
from moesd.engine.sampling import (SamplingParams, forced_acceptance, greedy_verify, probs_from_logits,
                                   rejection_sample, select_tokens)
from moesd.errors import MoesdError

MAX_GAMMA = 16


@dataclass
class GenerationResult:
    token_ids: list[list[int]]  # generated tokens per prompt, prompt excluded
    finish_reasons: list[str]  # "eos" | "length"
    metrics: dict = field(default_factory=dict)


class SpecEngine:
    def __init__(self, target: LoadedModel, proposer=None, gamma: int = 4,
                 sampling: SamplingParams = SamplingParams(), seed: int = 0, routing: str = "model",
                 max_context: int | None = None):
        if not 0 <= gamma <= MAX_GAMMA:
            raise MoesdError(f"gamma must lie in 0..{MAX_GAMMA}, got {gamma}")
        if gamma > 0 and proposer is None:
            raise MoesdError("gamma > 0 needs a draft: a draft model, ngram or synthetic")
        if sampling.temperature < 0 or not 0 < sampling.top_p <= 1:
            raise MoesdError("temperature must be >= 0 and top_p in (0, 1]")
        self.target, self.proposer, self.gamma, self.sampling = target, proposer, gamma, sampling
        self.seed = seed
        self.clock = StageClock(target.device)
        self.max_context = max_context or getattr(target.model.config, "max_position_embeddings", None)
        self.recorder = ExpertRecorder(target.model, target.num_experts, target.top_k, routing, seed) \
            if target.is_moe else None
        if routing == "uniform" and not target.is_moe:
            raise MoesdError("uniform routing needs an MoE target")

    def _forward(self, kv: RaggedKV, phase: str, ids: torch.Tensor, valid: torch.Tensor, keep: int = 0):
        if self.recorder is not None:
            self.recorder.begin(phase, valid)
        logits, seconds = self.clock.run(kv.extend, ids, valid, logits_to_keep=keep)
        routing = self.recorder.end() if self.recorder is not None else None
        return logits, seconds, routing

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int, eos_token_id: int | None = None) -> GenerationResult:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise MoesdError("every prompt needs at least one token")
        if max_new_tokens < 1:
            raise MoesdError(f"max new tokens must be >= 1, got {max_new_tokens}")
        longest = max(len(p) for p in prompts)
        max_slots = 0
        if self.max_context and longest + max_new_tokens + self.gamma + 1 > self.max_context:
            raise MoesdError(f"prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model's "
                             f"context of {self.max_context}")
        device = self.target.device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        n = len(prompts)
        outputs: list[list[int]] = [[] for _ in range(n)]
        reasons = ["length"] * n
        active = list(range(n))
        acceptance = AcceptanceStats(self.gamma, n)
        experts = ExpertStats(self.target.num_experts, self.target.top_k) if self.recorder is not None else None
        steps: list[StepRecord] = []

        kv = RaggedKV(self.target.model, device)
        histories = [list(p) for p in prompts]
        prefill_s = 0.0
        if self.gamma == 0:
            ids, valid = left_pad(prompts, device)
            logits, prefill_s, routing = self._forward(kv, "prefill", ids, valid, keep=1)
            if experts is not None and routing is not None:
                experts.absorb([routing])
            last = select_tokens(logits[:, -1], self.sampling, generator)
            first = [[t] for t in last.tolist()]
            for rid, toks in enumerate(first):
                histories[rid].extend(toks)
            active = self._append(active, outputs, reasons, first, max_new_tokens, eos_token_id)
            last = self._select(kv, last, active, list(range(n)))
        else:
            # As transformers' assisted generation does, the target's prefill is merged into the first
            # verification: the draft proposes from the prompt, and the target scores prompt + drafts
            # in one forward. That step is recorded as "prefill+verify", apart from the stage medians.
            _, prefill_s = self.clock.run(self.proposer.start, prompts)  # the draft's prefill
            last = None

        while active:
            t_step = self.clock.now()
            b = len(active)
            first_round = last is None
            draft_forward_before = self.proposer.forward_s if self.proposer is not None else 0.0
            # Never draft past the longest remaining budget: those tokens could not be kept.
            room = max(max_new_tokens - len(outputs[r]) for r in active)
            gamma = min(self.gamma, room - 1) if self.gamma > 0 else 0
            if self.gamma == 0 or (gamma == 0 and not first_round):
                logits, target_s, routing = self._forward(kv, "decode", last[:, None],
                                                          torch.ones(b, 1, dtype=torch.bool, device=device), keep=1)
                tok = select_tokens(logits[:, -1], self.sampling, generator)
                new_tokens, draft_s, reject_s, final, kind = [[t] for t in tok.tolist()], 0.0, 0.0, tok, "decode"
                if self.proposer is not None and self.gamma > 0:
                    self.proposer.accept([0] * b, new_tokens, 0)
            else:
                gamma = max(gamma, 1) if first_round else gamma
                (drafts, draft_probs), draft_s = self.clock.run(
                    self.proposer.propose, gamma, [histories[i] for i in active], self.sampling, generator)
                drafts = drafts.to(device)
                if first_round:
                    ids, valid = left_pad([histories[i] + d for i, d in zip(active, drafts.tolist())], device)
                    phase, kind = "prefill+verify", "prefill+verify"
                else:
                    ids = torch.cat([last[:, None], drafts], dim=1)
                    valid = torch.ones_like(ids, dtype=torch.bool)
                    phase, kind = "verify", "spec"
                logits, target_s, routing = self._forward(kv, phase, ids, valid, keep=gamma + 1)
                (num_accepted, out), reject_s = self.clock.run(self._accept, logits, drafts, draft_probs, generator)
                kv.keep_last_block(torch.arange(gamma + 1, device=device)[None, :] <= num_accepted[:, None])
                kv.compact()
                acc = num_accepted.tolist()
                new_tokens = [r[: a + 1] for r, a in zip(out.tolist(), acc)]
                acceptance.record(active, acc, gamma)
                self.proposer.accept(acc, new_tokens, gamma)
                final = torch.gather(out, 1, num_accepted[:, None])[:, 0]
            before = active
            for slot, rid in enumerate(before):
                histories[rid].extend(new_tokens[slot])
            emitted = sum(len(outputs[r]) for r in before)
            active = self._append(before, outputs, reasons, new_tokens, max_new_tokens, eos_token_id)
            produced = sum(len(outputs[r]) for r in before) - emitted  # after cutting at EOS / the limit
            last = self._select(kv, final, active, before)
            draft_forward_s = (self.proposer.forward_s - draft_forward_before) if self.proposer is not None else 0.0
            max_slots = max(max_slots, kv.length)
            steps.append(StepRecord(kind, b, gamma, self.clock.now() - t_step, target_s, draft_s, draft_forward_s,
                                    reject_s, produced))
            if experts is not None and routing is not None:
                experts.absorb([routing])

        metrics = {
            "gamma": self.gamma,
            "batch_size": n,
            "draft_method": self.proposer.kind if (self.proposer is not None and self.gamma > 0) else "none",
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "prefill_s": prefill_s,
            # Target KV slots per row, holes included: bounded by compaction, not by the step count.
            "cache": {"max_slots": max_slots, "longest_prompt": longest,
                      "max_hole_fraction": kv.compact_threshold},
            "stages": stage_summary(steps, self.gamma, prefill_s, sum(len(o) for o in outputs)),
            "steps": steps_as_dicts(steps),
            "target": {"name": self.target.name, "experts_implementation": self.target.experts_implementation,
                       "num_experts": self.target.num_experts, "top_k": self.target.top_k,
                       "routing": self.recorder.routing if self.recorder is not None else None,
                       "dtype": str(self.target.dtype).replace("torch.", ""), "device": str(device),
                       "random_weights": self.target.random_weights},
        }
        if self.gamma > 0:
            metrics["acceptance"] = acceptance.summary()
            if self.proposer.kind == "synthetic":
                metrics["note"] = "synthetic acceptance: outputs are not target text"
        if experts is not None:
            metrics["experts"] = experts.summary()
            metrics["routing_curve"] = experts.routing_curve()
        return GenerationResult(outputs, reasons, metrics)

    def _accept(self, logits, drafts, draft_probs, generator):
        if self.proposer.kind == "synthetic":
            forced = self.proposer.forced_accepts(drafts.shape[0], drafts.shape[1]).to(drafts.device)
            return forced_acceptance(logits, drafts, forced, self.sampling, generator)
        if self.sampling.greedy:
            return greedy_verify(logits, drafts)
        target_probs = probs_from_logits(logits, self.sampling)
        if draft_probs is None:  # deterministic proposal (n-gram): q is one-hot
            draft_probs = torch.zeros(*drafts.shape, target_probs.shape[-1], device=drafts.device)
            draft_probs.scatter_(2, drafts[..., None], 1.0)
        return rejection_sample(target_probs, draft_probs.to(target_probs.device), drafts, generator)

    @staticmethod
    def _append(active, outputs, reasons, new_tokens, max_new_tokens, eos_token_id) -> list[int]:
        """Append each row's new tokens, cutting at EOS or the limit; returns the rows still going."""
        still = []
        for rid, toks in zip(active, new_tokens):
            room = max_new_tokens - len(outputs[rid])
            toks = toks[:room]
            if eos_token_id is not None and eos_token_id in toks:
                toks = toks[: toks.index(eos_token_id) + 1]
                reasons[rid] = "eos"
            outputs[rid].extend(toks)
            if reasons[rid] != "eos" and len(outputs[rid]) < max_new_tokens:
                still.append(rid)
        return still

    def _select(self, kv: RaggedKV, last: torch.Tensor, active: list[int], before: list[int]) -> torch.Tensor:
        if active == before:
            return last
        slots = [before.index(r) for r in active]
        if not slots:
            return last[:0]
        idx = torch.tensor(slots, device=last.device)
        kv.select_rows(idx)
        if self.proposer is not None and self.gamma > 0:
            self.proposer.select_rows(slots)
        return last[idx]
