"""The batched speculative-decoding loop (gamma = 0 gives the autoregressive baseline).

Each step, for the B active sequences: the proposer drafts gamma tokens per row; the target scores
B x (gamma + 1) tokens (the last emitted token plus the drafts) in one forward; rejection sampling
(or greedy matching) accepts a per-row prefix and emits one more token; the target cache keeps only
the accepted slots of each row. Sequences that hit EOS or their token limit leave the batch at once.
"""

from __future__ import annotations

import torch

from moesd.engine import phases
from moesd.engine.expert_budget import ExpertBudget
from moesd.engine.expert_hooks import ExpertRecorder
from moesd.engine.generation_result import GenerationResult
from moesd.engine.loading import LoadedModel
from moesd.engine.metrics import StageClock, StepRecord
from moesd.engine.options import MAX_GAMMA, check_gamma, check_kv_cache, check_routing, check_sampling
from moesd.engine.proposers import left_pad
from moesd.engine.ragged_kv import RaggedKV
from moesd.engine.static_kv import StaticKV, new_kv
from moesd.engine.run_report import run_metrics
from moesd.engine.run_state import RunState
from moesd.engine.sampling import (SamplingParams, forced_acceptance, greedy_verify, probs_from_logits,
                                   rejection_sample, select_tokens)
from moesd.errors import MoesdError

__all__ = ["GenerationResult", "MAX_GAMMA", "SpecEngine"]


class SpecEngine:
    """Reentrant: every `generate` call owns its state (cache, proposer, hooks, statistics) in a `_Run`.

    `proposer` is either a factory `seed -> proposer` (a fresh, stateless start per call; what
    engine/factory.py passes) or one proposer object that every call restarts."""

    def __init__(self, target: LoadedModel, proposer=None, gamma: int = 4,
                 sampling: SamplingParams = SamplingParams(), seed: int = 0, routing: str = "model",
                 max_context: int | None = None, budget: ExpertBudget | None = None, measure_kl: bool = False,
                 merge_prefill: bool = True, gamma_policy=None,
                 kv_cache: str = "static", cuda_graphs: bool = False):
        check_gamma(gamma)
        if gamma > 0 and proposer is None:
            raise MoesdError("gamma > 0 needs a draft: a draft model, ngram or synthetic")
        check_sampling(sampling.temperature, sampling.top_p)
        self.target, self.gamma, self.sampling = target, gamma, sampling
        self._proposer = proposer
        self.seed = seed
        self.clock = StageClock(target.device)
        self.max_context = max_context or getattr(target.model.config, "max_position_embeddings", None)
        check_routing(routing)
        if routing == "uniform" and not target.is_moe:
            raise MoesdError("uniform routing needs an MoE target")
        self.routing = routing
        if budget is not None and not target.is_moe:
            raise MoesdError("an expert budget needs an MoE target")
        if budget is not None and gamma == 0:
            raise MoesdError("an expert budget applies to verification; gamma 0 has none")
        if measure_kl and budget is None:
            raise MoesdError("KL to the unbudgeted target needs an expert budget")
        # MoE-Spec: a per-layer cap on the experts a verify forward loads. Prefill and decode are
        # never budgeted, so with a budget the target prefill runs on its own instead of being
        # merged into the first verification. measure_kl re-runs every verify block unbudgeted
        # (untimed) to measure KL(full || budgeted); use it in quality passes, not timing runs.
        self.budget, self.measure_kl = budget, measure_kl
        self.merge_prefill = merge_prefill and budget is None
        # `--gamma auto` (engine/adaptive_gamma.py): a factory seed -> policy; `gamma` is then the maximum.
        if gamma_policy is not None and (gamma == 0 or budget is not None):
            raise MoesdError("--gamma auto needs a draft and a maximum draft length >= 1, and no expert budget")
        self._gamma_policy = gamma_policy
        # engine/static_kv.py (position-indexed, preallocated) unless the model needs the ragged DynamicCache.
        self.kv_cache = check_kv_cache(kv_cache)
        # engine/cuda_graphs.py: fixed-shape static caches whose decode/verify/draft forwards are captured on
        # CUDA (on the CPU the same fixed-shape path runs uncaptured, which is how the tests check it).
        if cuda_graphs and kv_cache != "static":
            raise MoesdError("CUDA graphs need the static KV cache")
        self.cuda_graphs = cuda_graphs
        self._plans: dict = {}  # (rows, capacity) -> GraphPlan: buffers and graphs kept between runs

    @property
    def gamma_cost_model(self):
        """`--gamma auto`'s step-cost model, shared by the policies of every call (None without auto, or where the
        policy factory keeps none): what the engine's earlier calls have measured."""
        return getattr(self._gamma_policy, "cost", None)

    def _new_proposer(self, seed: int):
        if self.gamma == 0 or self._proposer is None:
            return None
        # A factory (seed -> proposer) makes a fresh one; a proposer object is restarted by `start`.
        return self._proposer if hasattr(self._proposer, "propose") else self._proposer(seed)

    def _forward(self, run: RunState, phase: str, ids: torch.Tensor, valid: torch.Tensor, keep: int = 0,
                 kv: RaggedKV | StaticKV | None = None):
        if run.recorder is not None:
            run.recorder.begin(phase, valid)
        logits, seconds = self.clock.run((kv or run.kv).extend, ids, valid, logits_to_keep=keep)
        routing = run.recorder.end() if run.recorder is not None else None
        return logits, seconds, routing

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int | list[int], eos_token_id: int | None = None,
                 seed: int | None = None, batch_size: int | None = None, on_finish=None) -> GenerationResult:
        """`seed` (default: the engine's) seeds sampling, uniform routing and synthetic acceptance of this call.

        `batch_size` below the number of prompts runs them as serving engines do (continuous batching): at most
        B sequences at a time, and each step a finished row's place goes to the next prompt, which is
        prefilled and joins the running batch. `on_finish(n)` is told how many sequences finished each step."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise MoesdError("every prompt needs at least one token")
        limits = list(max_new_tokens) if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens]
        if isinstance(max_new_tokens, (list, tuple)) and len(limits) != len(prompts):
            raise MoesdError(f"{len(limits)} token limits for {len(prompts)} prompts")
        if min(limits) < 1:
            raise MoesdError(f"max new tokens must be >= 1, got {min(limits)}")
        longest = max(len(p) for p in prompts)
        if self.max_context and longest + max(limits) + self.gamma + 1 > self.max_context:
            raise MoesdError(f"prompt of {longest} tokens + {max(limits)} new tokens exceeds the model's "
                             f"context of {self.max_context}")
        if batch_size is not None and batch_size < 1:
            raise MoesdError(f"batch size must be >= 1, got {batch_size}")
        seed = self.seed if seed is None else seed
        plan = self._graph_plan(longest, max(limits), min(batch_size or len(prompts), len(prompts)))
        run = RunState(self.target, self._new_proposer(seed), self.gamma, seed, prompts, max_new_tokens, eos_token_id,
                       batch_size or len(prompts), self.kv_cache, plan)
        run.policy = self._gamma_policy(seed) if self._gamma_policy is not None else None
        # Hooks live only inside one call: engines share model objects, and a hook left behind by a
        # uniform-routing engine would silently rewrite the routing of every later engine.
        if self.target.is_moe:
            run.recorder = ExpertRecorder(self.target.model, self.target.num_experts, self.target.top_k,
                                          self.routing, seed, self.budget)
            if getattr(run.kv, "runner", None) is not None:
                run.kv.runner.recorder = run.recorder
        try:
            if self.gamma == 0 or not self.merge_prefill:
                self._prefill(run)
                if self.gamma > 0 and run.active:
                    self._start_draft(run)
            elif run.policy is not None and not run.policy.opens_with_round(
                    len(run.active), max(run.limits[r] for r in run.active), run.active,
                    None if run.queue else [run.limits[r] for r in run.active], self._start_tokens(run)):
                self._prefill(run)  # --gamma auto expects SD to lose here: the draft starts at the first round, if any
            else:
                # As transformers' assisted generation does, the target's prefill is merged into the first
                # verification: the draft proposes from the prompt, and the target scores prompt + drafts
                # in one forward. That step is recorded as "prefill+verify", apart from the stage medians.
                self._start_draft(run)
            done = 0
            while run.active or run.queue:
                if run.queue and len(run.active) < run.batch_size:
                    self._admit(run)
                if run.active:
                    self._step(run)
                if run.finished > done and on_finish is not None:
                    on_finish(run.finished - done)
                done = run.finished
            kl = torch.cat(run.budget_kl) if run.budget_kl else None
            return GenerationResult(run.outputs, run.reasons, run_metrics(self, run, longest), self.gamma,
                                    run.acceptance.counts if self.gamma > 0 else None, run.experts, kl)
        finally:
            if run.recorder is not None:
                run.recorder.remove()

    def _graph_plan(self, longest: int, most_new: int, rows: int):
        if not self.cuda_graphs or self.budget is not None:  # budgets rank experts on the host: uncaptured
            return None
        from moesd.engine.cuda_graphs import GraphPlan, plan_capacity

        key = (rows, plan_capacity(longest + most_new + 2 * (self.gamma + 1)))
        plan = self._plans.get(key)
        if plan is None:
            while len(self._plans) >= 4:  # each holds a KV cache of rows x capacity slots per layer
                del self._plans[next(iter(self._plans))]
            plan = self._plans[key] = GraphPlan(*key, capture=self.target.device.type == "cuda")
        plan.start_run()
        return plan

    def _admit(self, run: RunState) -> None:
        """Continuous batching: prefill the next prompts into free rows. Their first token comes from their own
        prefill (never merged with a verify); rows that end right there (EOS, or one new token) never join."""
        rids = run.queue[: run.batch_size - len(run.active)]
        del run.queue[: len(rids)]
        kv = new_kv(self.kv_cache, self.target.model, run.device)
        ids, valid = left_pad([run.histories[r] for r in rids], run.device)
        logits, seconds, routing = self._forward(run, phases.PREFILL, ids, valid, keep=1, kv=kv)
        run.prefill_s += seconds
        run.absorb(routing)
        first = select_tokens(logits[:, -1], self.sampling, run.generator)
        joining = [i for i, (rid, t) in enumerate(zip(rids, first.tolist())) if run.append_first(rid, t)]
        if not joining:
            return
        idx = torch.tensor(joining, device=run.device)
        if len(joining) < len(rids):
            kv.select_rows(idx)
        new_ids = [rids[i] for i in joining]
        replace = not run.active  # every earlier row has finished: the new rows are the whole batch
        if replace and getattr(run.kv, "max_rows", None):  # fixed shapes: the same buffers, refilled
            run.kv.clear()
            run.kv.add_rows(kv)
            run.last = first[idx]
        elif replace:
            run.kv, run.last = kv, first[idx]
        else:
            run.kv.add_rows(kv)
            run.last = torch.cat([run.last, first[idx]])
        run.active = run.active + new_ids
        if run.proposer is not None and run.proposer_started:
            _, seconds = self.clock.run(run.proposer.add_rows, [run.histories[r][:-1] for r in new_ids],
                                        [run.histories[r][-1:] for r in new_ids], replace)
            run.prefill_s += seconds

    def _start_tokens(self, run: RunState) -> int:
        """The history tokens a draft that has not started must read before its first round (else 0)."""
        return 0 if run.proposer_started else sum(len(run.histories[r]) for r in run.active)

    def _start_draft(self, run: RunState) -> float:
        """The proposer reads every active row's history (its prefill, booked as prefill time); returns seconds."""
        tokens = self._start_tokens(run)
        _, seconds = self.clock.run(run.proposer.start, [run.histories[i] for i in run.active])
        run.prefill_s += seconds
        run.proposer_started = True
        if run.policy is not None:
            run.policy.draft_started(tokens, seconds, getattr(run.proposer, "start_scores_next", False))
        return seconds

    def _prefill(self, run: RunState) -> None:
        ids, valid = left_pad([run.histories[i] for i in run.active], run.device)
        logits, run.prefill_s, routing = self._forward(run, phases.PREFILL, ids, valid, keep=1)
        if run.policy is not None:
            run.policy.observe_prefill(ids.numel(), run.prefill_s)
        run.absorb(routing)
        last = select_tokens(logits[:, -1], self.sampling, run.generator)
        run.emit([[t] for t in last.tolist()], last)

    def _step(self, run: RunState) -> None:
        t_step = self.clock.now()
        b = len(run.active)
        first_round = run.last is None
        proposer = run.proposer
        # Never draft past the longest remaining budget: those tokens could not be kept.
        left = [run.limits[r] - len(run.outputs[r]) for r in run.active]
        room = max(left)
        # The policy sees only the batch size and earlier rounds, never this round's drafts (lossless).
        if run.policy is not None:  # with no request waiting, the time until the last row ends is what counts
            gamma = run.policy.choose(b, room, minimum=int(first_round), rows=run.active,
                                      remaining=None if run.queue else left, start_tokens=self._start_tokens(run))
        else:
            gamma = min(self.gamma, room - 1)
        if gamma > 0 and not run.proposer_started:  # the run opened with a plain prefill: the draft starts now
            t_step += self._start_draft(run)  # prefill time, not this round's
        draft_forward_before = proposer.forward_s if proposer is not None else 0.0
        if self.gamma == 0 or (gamma <= 0 and not first_round):
            kind, gamma, target_s, draft_s, reject_s, routing = phases.DECODE, 0, *self._decode(run)
        else:
            gamma = max(gamma, 1)
            proposal, draft_s = self.clock.run(
                proposer.propose, gamma, [run.histories[i] for i in run.active], self.sampling, run.generator)
            lengths = getattr(proposer, "draft_lengths", None)
            if not first_round and lengths is not None and max(lengths) == 0:
                # Prompt lookup found nothing in any row: a plain decode step, as transformers' prompt lookup
                # does (decided from past tokens only, so SD stays lossless). --gamma auto counts it apart: it
                # cost a decode step, not a round.
                if run.policy is not None:
                    run.policy.observe_empty_round()
                kind, gamma, (target_s, _, reject_s, routing) = phases.DECODE, 0, self._decode(run)
            else:
                kind = phases.PREFILL_VERIFY if first_round else phases.VERIFY
                target_s, reject_s, routing = self._speculate(run, gamma, first_round, proposal)
        produced = run.flush()
        draft_forward_s = (proposer.forward_s - draft_forward_before) if proposer is not None else 0.0
        run.max_slots = max(run.max_slots, run.kv.length)
        run.steps.append(StepRecord(kind, b, gamma, self.clock.now() - t_step, target_s, draft_s, draft_forward_s,
                                    reject_s, produced))
        run.absorb(routing)
        if run.policy is not None and kind != phases.PREFILL_VERIFY:  # the merged prefill is no round to price
            run.policy.observe_times(b, gamma, target_s, draft_s, reject_s, run.steps[-1].step_s)

    def _decode(self, run: RunState):
        """One target token per row (the autoregressive step; also SD's last round with one token left)."""
        ones = torch.ones(len(run.active), 1, dtype=torch.bool, device=run.device)
        logits, target_s, routing = self._forward(run, phases.DECODE, run.last[:, None], ones, keep=1)
        tok = select_tokens(logits[:, -1], self.sampling, run.generator)
        new_tokens = [[t] for t in tok.tolist()]
        if run.proposer is not None and run.proposer_started:
            run.proposer.accept([0] * len(new_tokens), new_tokens, 0)
        run.pending = (new_tokens, tok)
        return target_s, 0.0, 0.0, routing

    def _speculate(self, run: RunState, gamma: int, first_round: bool, proposal):
        drafts, draft_probs = proposal
        drafts = drafts.to(run.device)
        # Ragged drafts (prompt lookup: a row whose n-gram has a short continuation, or none, proposes fewer
        # tokens): each row's drafts are right-aligned and the columns before them are skipped. The verify
        # block is left-padded per row: a row without a draft verifies nothing (its padded slots are still
        # computed in the batched forward; a step where no row drafts is a plain decode instead).
        lengths = getattr(run.proposer, "draft_lengths", None)
        ragged = lengths is not None and min(lengths) < gamma
        pad = torch.tensor([gamma - g for g in lengths], device=run.device) if ragged \
            else torch.zeros(len(run.active), dtype=torch.long, device=run.device)
        rows = drafts.tolist()
        own = [r[:g] for r, g in zip(rows, lengths)] if ragged else rows
        if ragged:
            drafts = torch.tensor([[0] * (gamma - len(r)) + r for r in own], dtype=torch.long, device=run.device)
        if first_round:
            ids, valid = left_pad([run.histories[i] + d for i, d in zip(run.active, own)], run.device, width=gamma + 1)
        elif ragged:
            ids, valid = left_pad([[t] + d for t, d in zip(run.last.tolist(), own)], run.device, width=gamma + 1)
        else:
            ids = torch.cat([run.last[:, None], drafts], dim=1)
            valid = torch.ones_like(ids, dtype=torch.bool)
        phase = phases.PREFILL_VERIFY if first_round else phases.VERIFY
        full_logits = self._unbudgeted_logits(run, ids, valid, gamma) if self.measure_kl else None
        logits, target_s, routing = self._forward(run, phase, ids, valid, keep=gamma + 1)
        if first_round and run.policy is not None:
            run.policy.observe_prefill(ids.numel(), target_s)
        if full_logits is not None:
            run.budget_kl.append(_kl_per_token(full_logits, logits))
        skip = torch.arange(gamma, device=run.device)[None, :] < pad[:, None] if ragged else None
        (through, out), reject_s = self.clock.run(self._accept, run, logits, drafts, draft_probs, skip)
        # `through`: block columns passed (skipped ones included); the row's own accepted drafts are the rest.
        run.kv.keep_last_block(torch.arange(gamma + 1, device=run.device)[None, :] <= through[:, None])
        run.kv.compact()
        acc = (through - pad).tolist()
        new_tokens = [r[p: t + 1] for r, p, t in zip(out.tolist(), pad.tolist(), through.tolist())]
        run.acceptance.record(run.active, acc, list(lengths) if ragged else gamma)
        if run.policy is not None:  # every row was offered gamma positions; a shorter draft ends where it ends
            run.policy.observe_round(acc, [gamma] * len(acc), run.active)
        run.proposer.accept(acc, new_tokens, gamma)
        run.pending = (new_tokens, torch.gather(out, 1, through[:, None])[:, 0])
        return target_s, reject_s, routing

    def _unbudgeted_logits(self, run: RunState, ids: torch.Tensor, valid: torch.Tensor, gamma: int) -> torch.Tensor:
        """The same verify block through the unbudgeted target on the same cache, then removed
        again (its slots are dropped and cropped): the reference for KL(full || budgeted)."""
        run.recorder.begin(phases.SHADOW, valid)  # not "verify", so no budget
        logits = run.kv.extend(ids, valid, logits_to_keep=gamma + 1)
        run.recorder.end()
        run.recorder.forwards.pop()  # its routing is not a forward the run paid for
        run.kv.keep_last_block(torch.zeros_like(valid))
        return logits

    def _accept(self, run: RunState, logits, drafts, draft_probs, skip=None):
        generator = run.generator
        if run.proposer.kind == "synthetic":
            forced = run.proposer.forced_accepts(drafts.shape[0], drafts.shape[1]).to(drafts.device)
            return forced_acceptance(logits, drafts, forced, self.sampling, generator)
        if self.sampling.greedy:
            return greedy_verify(logits, drafts, skip)
        target_probs = probs_from_logits(logits, self.sampling)
        if draft_probs is None:  # deterministic proposal (n-gram): q is one-hot
            draft_probs = torch.zeros(*drafts.shape, target_probs.shape[-1], device=drafts.device)
            draft_probs.scatter_(2, drafts[..., None], 1.0)
        return rejection_sample(target_probs, draft_probs.to(target_probs.device), drafts, generator, skip)


def _kl_per_token(full_logits: torch.Tensor, budgeted_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_full || p_budgeted) at temperature 1 for every verify token, flattened."""
    log_p = torch.log_softmax(full_logits.float(), dim=-1)
    log_q = torch.log_softmax(budgeted_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).reshape(-1)
