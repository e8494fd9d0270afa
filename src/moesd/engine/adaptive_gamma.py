"""`--gamma auto`: choose the draft length every step from predicted cost and observed acceptance (lossless).

Each step, for the B rows still generating, the policy picks gamma in 0..G_max maximising expected committed
tokens per second, E[tokens | gamma] / T(B, gamma), where a request waits for a row (continuous batching), or
minimising the time until the last row ends where none does (a static batch: engine/finish_objective.py):
- E[tokens | gamma] = 1 + sum_{i < gamma} p_i, with p_i the probability that the first i + 1 draft tokens are all
  accepted (vLLM's per-position acceptance rate), from this run's past rounds: the means of Beta posteriors of
  per-position conditional acceptance, shrunk towards the pooled alpha where a position has few observations
  (each step drew from them at first, Thompson sampling; at 32-token runs of ~8 rounds the draws' noise cost more
  than the exploring earned: one `--trace stdlib:1` run read 84 tok/s drawing and 133 tok/s on the means, the
  same engine state, and the probes below already keep the estimates current; engine/round_tokens.py);
- T(B, 0) is a decode step; T(B, gamma) one SD round (gamma draft tokens, a verify of gamma + 1 tokens per row,
  rejection), from Algorithm 1's step times (moesd.perf: the physical prior, or `moesd fit` parameters),
  refined by what this run measures (StepCostModel: the target's forward as w0 + w1 x prior(n tokens) + w2 x n
  fitted to the run's forwards, a draft map that also prices the tokens the draft must catch up on, a rejection
  map, each kind of step's measured time outside these stages, and measured over predicted step times per batch
  size; engine/step_cost_model.py), so the choice adapts to the machine it runs on.
The choice goes at most to twice the longest draft length whose round the run has measured (1 -> 2 -> 4 -> 8: a trust
region on the cost model's extrapolation). gamma = 0 is plain decoding: where SD loses, or wins by less than a margin
(3 %) inside the cost model's error, the engine stops speculating, and after a run of such steps it probes: one
round, of the best length under optimistic acceptance (`_probe_length`), so the estimates stay current. The run it
waits doubles after each probe that changed nothing (4, 8, ... `probe_every`); a far verdict (under 0.9x) waits
`probe_every` at once, counted across calls; probes share a budget of 2 % of the run's time (10 % while few rounds
near the batch size are timed; where an earlier call deferred a probe dearer than its whole budget, what the calls
leave unspent is saved up for it, `bank_unfit_probes`; `carry_probe_budget` saves every call's): probe_schedule.py.
A decode verdict at least 5 % from flipping stands for 3 more steps of the same rows per 5 % (`hold_steps`, up to
`hold_scale` = 4 x).

What carries between the `generate` calls of one engine (engine/factory.py): the cost model (the machine and the
models do not change; a new run trusts its measurements near batch sizes they were made at, `_seed`) and the last
run's acceptance as a weak prior (`carry_acceptance`); never a request's own acceptance. With both known, a
run opens with a plain prefill where SD is predicted to lose (`opens_with_round`), and the draft reads the
histories only at the first round that speculates, its prefill priced as part of that round; a run where SD never
pays never prefills the draft. Unless one round merged with the prefill pays for itself: it adds only its drafts to
a forward the run pays anyway, and it is priced as a first round, from what first rounds accepted
(engine/merged_opening.py, `merged_opening`). Where first rounds accept like the same requests' later ones, a
request's first round counts in its own estimate (`first_round_evidence`), so the next step knows which request
it serves. Rounds that come out empty (prompt lookup found nothing in any row; the engine
decodes instead) are priced as the decode steps they become (`_steps_s`).

Why this keeps SD lossless: the chosen gamma is a function of the batch size, of acceptance outcomes of earlier
rounds and of earlier stage timings only, never of the current round's draft
tokens or of the draft / target probabilities being compared. Given the history, each round is then an
ordinary speculative-sampling round with a fixed draft length, whose output is distributed exactly as the
target's (Leviathan et al., Theorem 1; greedy: identical tokens); a gamma chosen in advance from the past
cannot bias which tokens the round accepts.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import NamedTuple

import numpy as np

from moesd.engine.acceptance_posterior import PositionAcceptance, RequestAcceptance
from moesd.engine.finish_objective import finish_rates
from moesd.engine.merged_opening import best_merged_round, merged_round_gain_s
from moesd.engine.options import check_flag
from moesd.engine.probe_schedule import ProbeSchedule
from moesd.engine.round_tokens import RoundTokens
from moesd.engine.step_cost_model import StepCostModel
from moesd.errors import MoesdError

__all__ = ["AdaptiveGamma", "PositionAcceptance", "RequestAcceptance", "StepCostModel"]


class _Hold(NamedTuple):
    """A decode verdict that stands for the next steps of the same rows (`hold_steps`)."""

    key: tuple  # (batch size, the rows' request ids)
    steps: int  # the steps it may still stand
    entry: dict  # its trace entry
    limit: float  # the plain-step count below which no probe can fall due inside it (ProbeSchedule.hold_limit)


class AdaptiveGamma:
    """One run's draft-length policy (a fresh one per `generate` call)."""

    def __init__(self, max_gamma: int, cost: StepCostModel, probe_every: int = 64, first_probe: int = 4,
                 trace_limit: int = 4096, margin: float = 0.03, probe_gain: float = 0.9,
                 probe_budget: float = 0.02, trusted_rounds: int = 4, untrusted_probe_budget: float = 0.1,
                 hold_steps: int = 3, plans: bool = True, probe_optimism: float = 2.0, hold_scale: int = 4,
                 finish_draws: int = 0, carry_probe_budget: bool = False,
                 carry_over_requests: bool = False, merged_opening: bool = True,
                 first_round_evidence: bool = True, bank_unfit_probes: bool = True,
                 fresh_rounds: bool = True) -> None:
        if max_gamma < 1:
            raise MoesdError(f"--gamma auto needs a maximum draft length >= 1, got {max_gamma}")
        self.probes = ProbeSchedule(first_probe, probe_every, probe_gain, probe_budget, untrusted_probe_budget,
                                    trusted_rounds, carry_probe_budget, bank_unfit_probes)
        if not 0.0 <= margin < 1.0:
            raise MoesdError(f"the speculation margin must be in [0, 1), got {margin}")
        self.max_gamma, self.cost = max_gamma, cost
        # Speculate only where the predicted gain over decoding exceeds this: the cost model's error on this CPU
        # is ~10 % step to step, and a gain inside it is a coin flip whose loss side the "never more than 3 % below
        # autoregressive" goal forbids (one SmolLM2 run at B = 16 speculated on predicted 1.03-1.09 and lost 13 %).
        # 5 % read 0.95x the best fixed gamma at SmolLM2 B = 1 where 3 % read 0.99x (`--variant`, results sec. 15).
        self.margin = margin
        # A plain-decoding verdict stands for `hold_steps` more steps of the same rows per 5 % it lies from flipping,
        # up to `hold_scale` x (1: the fixed holds of 9b07f81; no probe falls due inside a hold): between rounds only
        # the rows' remaining tokens and the cost maps' drift change. `--alternate stdlib:16`, calls that only decoded
        # (verdicts 0.24-0.93x): 8.5-9.0 ms of decision per call without holds (8edc74f, AVX2), 3.5-3.8 ms holding 3
        # (9b07f81); on the AVX512 CPU 6.8-8.6 ms holding 3, 3.5-5.9 scaled (81ffbf9; docs/results.md section 15).
        if not all(isinstance(v, int) and v >= low for v, low in ((hold_steps, 0), (hold_scale, 1))):
            raise MoesdError(f"hold_steps must be an integer >= 0 and hold_scale >= 1, got {hold_steps}, {hold_scale}")
        self.hold_steps, self.hold_scale = hold_steps, hold_scale
        self.plans = bool(plans)  # False: finish_objective.py without two-phase plans (for side-by-side runs)
        if not (isinstance(finish_draws, int) and not isinstance(finish_draws, bool) and 0 <= finish_draws <= 4096):
            raise MoesdError(f"finish_draws must be an integer in 0..4096, got {finish_draws!r}")
        # > 0: a static batch's rows end at the expected order statistics of random ends (finish_rates), not at their
        # expected progress. Off by default: it predicts the end better (`--finish moe:64`: 0.98x after rounds, was
        # 1.09x), but paired runs read the throughput 1-6 % lower with it (CPU MoE B = 16, 64 and mixed; results 15):
        # it prices the rest of the run as if the estimates' uncertainty stayed, where the policy learns and switches.
        self.finish_draws = finish_draws
        # True: the acceptance carried to the next call is centred on a mean over the requests the engine ran, not
        # on the last call's estimate (PositionAcceptance.carry). Off by default: it was tried together with the
        # cost model's `anchored_index` (d7b3924), whose confirm left a stdlib engine at B = 1 decoding 191 calls in
        # a row (docs/results.md section 15).
        self.carry_over_requests = check_flag("carry_over_requests", carry_over_requests)
        # False: a run expecting SD to lose always opens with a plain prefill (before merged_opening.py).
        self.merged_opening = check_flag("merged_opening", merged_opening)
        # False: a request's first round never counts in its own estimate (RequestAcceptance.first_rounds_count).
        self.first_round_evidence = check_flag("first_round_evidence", first_round_evidence)
        # False: the round right after the draft's prefill is timed and priced as any other, though that prefill
        # scored its first draft token (StepCostModel.start_saves_s).
        self.fresh_rounds = check_flag("fresh_rounds", fresh_rounds)
        self._fresh_draft = self._fresh_round = False  # the draft's prefill scored the next round's first token
        if not 0.0 <= probe_optimism < float("inf"):
            raise MoesdError(f"the probes' acceptance optimism must be finite and >= 0, got {probe_optimism}")
        self.probe_optimism = probe_optimism  # 0: a probe takes the best length at the posterior means
        self._held: _Hold | None = None
        self.held_decisions = 0
        self.tokens = RoundTokens(max_gamma)  # the acceptance estimates and the tokens a round commits
        self.tokens.requests.first_evidence = self.first_round_evidence
        self.longest_measured = 0  # the longest draft length whose round the cost model has seen
        self.decode_measured = False  # whether the cost model has seen a plain decode step
        self.since_round = 0  # plain steps since the last round: what a draft model must read before drafting
        self.carried: dict = {}  # what the engine's earlier runs had measured near this run's batch size
        self.carried_acceptance: dict = {}  # what they had accepted (`carry_acceptance`)
        self.opening: dict | None = None  # the opening decision, where one was made (`opens_with_round`)
        self._merged_gamma = 0  # the first round's draft length where the opening chose a merged round for its worth
        self.decision_s, self.decisions, self.histogram, self.observe_s = 0.0, 0, Counter(), 0.0
        self.trace: list[dict] = []
        self.trace_limit, self._seeded = trace_limit, False

    def _seed(self, b: int) -> None:
        """What earlier runs of this engine measured near batch size `b` counts as measured in this one (one cost
        model serves every `generate` call of an engine): no forced probe, and the trust region starts there."""
        if not self._seeded:
            self._seeded = True
            longest, decoded = self.cost.measured_near(b)
            self.longest_measured = max(self.longest_measured, longest)
            self.decode_measured |= decoded
            self.carried = {"longest_round": longest, "decode": decoded}

    def _rates(self, b: int, room: int, minimum: int, rows, remaining, start_tokens: int, optimism: float = 0.0):
        """(the objective per draft length 0..top, expected tokens per row per draft length, top, the step times
        at batch size b). The objective: tokens per second, or where `remaining` is given (no request waits for a
        row) the static batch's remaining tokens over the time until its last row ends (engine/finish_objective.py).
        `optimism`: the acceptance's exploration bonus (PositionAcceptance.per_position), for a probe's length."""
        # A trust region on the cost model: at most twice the longest draft length it has measured (one more from
        # 1), as its shape over token counts is the prior's, which can be far off. One length per step was the first
        # rule: a 32-token stdlib run at B = 1 (~12 rounds, high acceptance) spent 5 of them ramping 1 -> 6.
        reach = max(self.longest_measured + 1, 2 * self.longest_measured)
        top = max(minimum, min(self.max_gamma, room - 1, reach))
        per_row, tokens, per_row_var = self._row_tokens(top, rows, optimism)
        # A draft that has not started (the run opened with a plain prefill) first reads every row's history: a
        # one-off cost of the first round, which then needs no catch-up.
        start_s = self._start_s(b, start_tokens)
        catch_up = 0 if start_tokens else self.since_round
        if remaining is not None and len(remaining) == per_row.shape[0]:
            step_s = self._steps_by_batch_s(per_row.shape[0], top, catch_up)  # row k: batch size k + 1
            rates, step_s = (finish_rates(per_row, np.asarray(remaining, float), step_s, start_s, self.plans,
                                          self.finish_draws, per_row_var), step_s[-1])
        else:
            step_s = self._steps_s(b, top, catch_up)
            # Spread over the rest of the run at that draft length (~room / e_g steps).
            rates = tokens / (step_s + np.concatenate([[0.0], start_s * tokens[1:] / max(room, 1)]))
        return rates.tolist(), tokens.tolist(), top, step_s

    def _row_tokens(self, top: int, rows, optimism: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected tokens per row for draft lengths 0..top, their mean, and their variance where the finish
        objective draws (engine/round_tokens.py)."""
        return self.tokens.per_row(top, rows, optimism, variance=bool(self.finish_draws))

    @property
    def acceptance(self) -> PositionAcceptance:
        """The run's per-position acceptance, pooled over the rows (engine/round_tokens.py)."""
        return self.tokens.acceptance

    @property
    def requests(self) -> RequestAcceptance:
        """Each request's own acceptance relative to the pool."""
        return self.tokens.requests

    @property
    def empty_fraction(self) -> float:
        """The share of the rounds asked for that came out empty (RoundTokens.empty_fraction)."""
        return self.tokens.empty_fraction

    def _steps_by_batch_s(self, b: int, top: int, catch_up: int) -> np.ndarray:
        """`_steps_s` for batch sizes 1..b at once ([b, top + 1])."""
        return self._empty_as_decode(self.cost.steps_by_batch_s(b, top, catch_up))

    def _steps_s(self, b: int, top: int, catch_up: int) -> np.ndarray:
        """The cost model's step times for draft lengths 0..top, a round's being a decode step's in the share of
        rounds that come out empty (priced as rounds that accepted nothing, one SmolLM2 run at B = 1 decoded 29 of
        31 steps where gamma 1 had run 1.15x decoding)."""
        return self._empty_as_decode(self.cost.steps_s(b, top, catch_up))

    def _empty_as_decode(self, step_s: np.ndarray) -> np.ndarray:
        """Step times over draft lengths (last axis) with each round a decode step in the share that come out empty."""
        empty = self.tokens.empty_fraction
        if empty:
            step_s[..., 1:] = empty * step_s[..., :1] + (1.0 - empty) * step_s[..., 1:]
        return step_s

    def opens_with_round(self, batch_size: int, room: int, rows: list[int] | None = None,
                         remaining: list[int] | None = None, start_tokens: int = 0) -> bool:
        """Whether the run opens with an SD round merged with the target's prefill (the draft prefills the prompts
        first), or with a plain prefill (the draft starts only if a later step speculates, so a run where SD never
        pays never prefills it). Until decoding and rounds have been measured near this batch size, it opens
        with a round (the only way to learn them); then the same rule as `choose`, the draft's prefill of
        `start_tokens` prompt tokens priced."""
        t0 = time.perf_counter()
        self._seed(batch_size)
        opens = True
        if self.longest_measured and self.decode_measured:
            rates, _, top, step_s = self._rates(batch_size, room, 0, rows, remaining, start_tokens)
            sd = max(range(1, top + 1), key=lambda g: rates[g]) if top >= 1 else 0
            opens = sd > 0 and rates[sd] >= (1.0 + self.margin) * rates[0]
            self.opening = {"batch_size": batch_size, "round": opens,
                            "predicted_gain": rates[sd] / rates[0] if sd else 0.0}
            if not opens and top >= 1 and self.merged_opening:
                self._merged_gamma, net_s = self._merged_worth(batch_size, top, rows, remaining, start_tokens,
                                                               float(step_s[0]))
                opens = self._merged_gamma > 0
                self.opening.update(round=opens, merged_gamma=self._merged_gamma, merged_net_s=net_s)
        self.decision_s += time.perf_counter() - t0
        return opens

    def _merged_worth(self, b: int, top: int, rows, remaining, start_tokens: int, decode_s: float) -> tuple:
        """(the draft length 1..top of the merged first round worth most, its expected net seconds), or (0, its best
        net) where none saves more than it adds: the round alone, the rest of the run decoding (merged_opening.py).
        Every term is priced from earlier rounds and timings only, as the other choices are (lossless)."""
        extra_s = self.cost.merged_extra_s(b, top)
        first = self.requests.first_round_factor(self.acceptance.alpha)
        if extra_s is None or first is None:  # no prefill timed yet, or too few first rounds seen to price one
            return 0, 0.0
        per_row, _, _ = self._row_tokens(top, rows)
        static = remaining is not None and len(remaining) == per_row.shape[0]
        end_b = int(np.sum(np.asarray(remaining) == max(remaining))) if static else b
        end_decode_s = decode_s if end_b == b else float(self._steps_s(end_b, 0, 0)[0])
        gain_s = merged_round_gain_s(per_row, remaining if static else None, decode_s, end_decode_s, first)
        return best_merged_round(gain_s, extra_s, self._start_s(b, start_tokens))

    def choose(self, batch_size: int, room: int, minimum: int = 0, rows: list[int] | None = None,
               remaining: list[int] | None = None, start_tokens: int = 0) -> int:
        """The draft length for the next step of `batch_size` rows, of which the longest may still take `room`
        tokens (drafting past it would be wasted); `minimum` 1 where the step must speculate (the first round,
        merged with the target's prefill). `rows`: the request ids of the rows, so each request's own acceptance
        counts (without them every row is taken to accept like the pool). `remaining`: the tokens each row may
        still take, given where no request waits for a row (a static batch, or the end of a queue): the choice
        then minimises the time until the last row ends instead of maximising tokens per second.
        `start_tokens`: the history tokens a draft that has not started yet must read before its first round."""
        t0 = time.perf_counter()
        self._seed(batch_size)
        held, key = self._held, (batch_size, tuple(rows) if rows else None)
        self._held = None
        # Held while no probe can fall due inside the hold (ProbeSchedule.hold_limit): the plain steps stay below
        # `wait` (the verdict was close), or below `probe_every` (it was far, by the same 5 %), or a probe was due and
        # the probes' budget had no room for it (its room grows with the run's time: a probe it would allow inside the
        # hold comes at most `hold_steps` steps later).
        probes = self.probes
        if held is not None and minimum == 0 and held.key == key and held.steps > 0 and probes.zero_run < held.limit:
            self._held = held._replace(steps=held.steps - 1)
            probes.plain_step()
            self.held_decisions += 1
            return self._record(0, t0, held.entry)
        rates, tokens, top, step_s = self._rates(batch_size, room, minimum, rows, remaining, start_tokens)
        best = max(range(minimum, top + 1), key=lambda g: (rates[g], -g))  # ties: the shorter draft
        if minimum and self._merged_gamma:  # the merged first round the opening chose for its own worth
            best, self._merged_gamma = min(self._merged_gamma, top), 0
        if best > 0 and minimum == 0 and rates[best] < (1.0 + self.margin) * rates[0]:
            best = 0
        probe, hold = False, None
        # The best speculating choice against decoding: how far a decode verdict is from flipping.
        sd = max(range(1, top + 1), key=lambda g: rates[g]) if top >= 1 else 0
        if best == 0 and top >= 1:
            probes.plain_step()
            gap = 1.0 - rates[sd] / ((1.0 + self.margin) * rates[0])  # how far the verdict lies from flipping
            # No SD round has been measured yet (the merged first round is not priced; until one is, a "SD loses"
            # verdict rests on the prior's shape alone), or a probe is due (engine/probe_schedule.py): this one probes.
            thin = probes.thin(self.cost.rounds_near(batch_size))
            due = probes.due(probes.close(rates[sd], rates[0], thin))
            waiting = probes.waiting(thin)
            length = self._probe_length(batch_size, room, rows, remaining, start_tokens, sd, tokens) \
                if due and not waiting else sd
            probes.deferred += bool(due and waiting and self.longest_measured)
            if self.longest_measured == 0 or (due and not waiting and self._probe_affordable(
                    batch_size, length, tokens[length], start_tokens, thin)):
                best, probe = length, True
                probes.probed()
            elif self.hold_steps and gap > 0.05:
                # A far verdict without a due probe holds too: a stdlib B = 4 call held 9 of its first 12 plain steps
                # and none of the 19 after (verdicts 0.39-0.90x, `--trace`).
                hold = (min(self.hold_scale, int(gap / 0.05)) * self.hold_steps,
                        probes.hold_limit(due, probes.far(rates[sd], rates[0], thin)))
        elif best > 0 and not self.decode_measured and self.longest_measured > 0 and minimum == 0:
            # The other side of the comparison must be measured too: a decode cost extrapolated from verify
            # forwards alone kept one stdlib run speculating at B = 64 (0.79x autoregressive) where decoding wins.
            best, probe = 0, True
        elif best > 0:
            probes.speculated()
        entry = {"batch_size": batch_size, "gamma": best, "probe": probe, "held": False,
                 "predicted_gain": rates[best] / rates[0], "expected_tokens": tokens[best],
                 "best_round_gain": rates[sd] / rates[0] if sd else 0.0,
                 # The step's predicted time (draft prefill excluded) and, in a static batch, the rest of the run's
                 # (remaining tokens over the finish objective's rate), for checks against what they measure.
                 "predicted_step_s": float(step_s[best]), "objective": "throughput" if remaining is None else "finish",
                 "predicted_end_s": float(sum(remaining)) / rates[best] if remaining is not None else None}
        if hold is not None:
            self._held = _Hold(key, hold[0], dict(entry, held=True), hold[1])
        return self._record(best, t0, entry)

    def _probe_length(self, b: int, room: int, rows, remaining, start_tokens: int, sd: int, tokens: list) -> int:
        """A probe's draft length: the best under optimistic acceptance (`probe_optimism` accepted pseudo-observations
        per position), so a probe can show a long draft's gain where a position was seen a few times; priced at the
        posterior means, and the means' best (`sd`) where it does not fit the budget. Probing the means' best, a
        cold engine at stdlib B = 1 (gamma 6: 1.8x decoding) probed gamma 1, at most 2 tokens for ~1.6 decode steps,
        and decoded 24 of a 64-token call's 36 steps (`moesd generate --gamma auto`, docs/results.md section 15)."""
        if not self.probe_optimism:
            return sd
        rates, _, top, _ = self._rates(b, room, 0, rows, remaining, start_tokens, self.probe_optimism)
        length = max(range(1, top + 1), key=lambda g: (rates[g], -g))
        if length != sd and not self._probe_affordable(b, length, tokens[length], start_tokens,
                                                       self.probes.thin(self.cost.rounds_near(b)), commit=False):
            return sd
        return length

    def _record(self, best: int, t0: float, entry: dict) -> int:
        self.decision_s += time.perf_counter() - t0
        self.decisions += 1
        self.histogram[best] += 1
        if len(self.trace) < self.trace_limit:
            self.trace.append(entry)
        return best

    def _probe_affordable(self, b: int, g: int, expected_tokens: float, start_tokens: int, thin: bool,
                          commit: bool = True) -> bool:
        """Whether a probe of draft length g fits the probing budget (ProbeSchedule.affordable), priced as a round's
        time and the draft's start where it has not started, less the decode steps its expected tokens replace."""
        step_s = self._steps_s(b, g, 0 if start_tokens else self.since_round)
        start_s = self._start_s(b, start_tokens)
        loss_s = max(0.0, float(step_s[g]) + start_s - expected_tokens * float(step_s[0]))
        return self.probes.affordable(loss_s, thin, commit, start_s)

    def carry_acceptance(self, earlier: "AdaptiveGamma", weight: float = 8.0) -> None:
        """Start from an earlier run's acceptance: its pooled alpha (a prior worth `weight` + 2 observations, centred
        on its mean) and each position's conditional acceptance (worth at most `weight`) as priors, and how far its
        requests spread around the pool (a request's own acceptance is never carried), as serving engines keep
        acceptance statistics across requests. With the uniform prior, a stdlib B = 1 engine (SD 1.6x AR) opened calls
        with a plain prefill (predicted 0.79, 0.86x); with the pooled alpha alone it drafted 2-4 tokens where 6 of 8
        rounds accepted all 6 (results section 15). This run's own rounds outweigh it after one or two."""
        self.carried_acceptance = self.tokens.carry(earlier.tokens, weight, self.carry_over_requests)

    def carry_probe_clock(self, earlier: "AdaptiveGamma") -> None:
        """The far verdict's probe clock runs across the engine's runs (ProbeSchedule.carry)."""
        self.probes.carry(earlier.probes)

    def _start_s(self, b: int, start_tokens: int) -> float:
        """What starting the draft adds to its first round at batch size b (0 where it has started): its prefill of
        `start_tokens` history tokens, less the draft forward that prefill saves the round (`fresh_rounds`)."""
        if not start_tokens:
            return 0.0
        saves_s = self.cost.start_saves_s(b) if self.fresh_rounds else 0.0
        return max(0.0, self.cost.draft_start_s(start_tokens) - saves_s)

    def draft_started(self, tokens: int, seconds: float, scores_next: bool = False) -> None:
        """The draft has just read `tokens` history tokens in `seconds` (its prefill): priced for later runs, and
        nothing is left to catch up on. `scores_next`: the prefill's last logits give the next round's first draft
        token, so that round drafts with one forward fewer and is timed as such (`observe_times`)."""
        self.cost.observe_draft_start(tokens, seconds, scores_next)
        self.since_round = 0
        self._fresh_draft = scores_next and self.fresh_rounds

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        """The target's forward over whole prompts (a plain prefill, or one merged with the first round) took
        `seconds` for `tokens`: priced for a later run's opening."""
        self.cost.observe_prefill(tokens, seconds)

    def observe_empty_round(self) -> None:
        """A round was asked for and no row had a draft: the engine decoded instead (and times it as a decode)."""
        self.tokens.record_empty()

    def observe_round(self, accepted: list[int], drafted: list[int], rows: list[int] | None = None) -> None:
        self.probes.acceptance_changed()
        self._held = None
        self._fresh_round, self._fresh_draft = self._fresh_draft, False  # timed in `observe_times`, if at all
        self.tokens.record_round(accepted, drafted, rows)

    def observe_times(self, batch_size: int, gamma: int, target_s: float, draft_s: float, reject_s: float,
                      step_s: float | None = None) -> None:
        t0 = time.perf_counter()
        fresh = bool(gamma) and self._fresh_round  # `observe_round` of this round set it
        self.cost.observe(batch_size, gamma, target_s, draft_s, reject_s, step_s, self.since_round if gamma else 0,
                          fresh)
        self.probes.timed(step_s if step_s is not None else target_s + draft_s + reject_s)
        self.longest_measured = max(self.longest_measured, gamma)
        self.decode_measured |= gamma == 0
        self.since_round = self.since_round + 1 if gamma == 0 else 0
        self.observe_s += time.perf_counter() - t0  # bookkeeping; a refit falls in the first of the two to need it

    def summary(self) -> dict:
        return {"max_gamma": self.max_gamma, "cost_model": self.cost.source,
                "gamma_histogram": {str(g): n for g, n in sorted(self.histogram.items())},
                "mean_gamma": (sum(g * n for g, n in self.histogram.items()) / self.decisions
                               if self.decisions else 0.0),
                "decisions": self.decisions, "empty_rounds": self.tokens.empty_rounds, "decision_s": self.decision_s,
                "probe_loss_s": self.probes.loss_s, "probes_deferred": self.probes.deferred,
                "probe_banked_s": self.probes.banked_s,
                "held_decisions": self.held_decisions,
                "decision_us_per_step": 1e6 * self.decision_s / self.decisions if self.decisions else 0.0,
                "observe_s": self.observe_s, "alpha_estimate": self.acceptance.alpha, "carried": self.carried,
                "carried_acceptance": self.carried_acceptance, "carried_plain_steps": self.probes.carried_plain_steps,
                "opening": self.opening, "per_position_acceptance": self.acceptance.per_position(self.max_gamma),
                "cost_maps": self.cost.scales(), "trace": self.trace}
