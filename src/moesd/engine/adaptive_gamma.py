"""`--gamma auto`: choose the draft length every step from predicted cost and observed acceptance (lossless).

Each step, for the B rows still generating, the policy picks gamma in 0..G_max maximising expected committed
tokens per second, E[tokens | gamma] / T(B, gamma):
- E[tokens | gamma] = 1 + sum_{i < gamma} p_i, with p_i the probability that the first i + 1 draft tokens are all
  accepted (vLLM's per-position acceptance rate), estimated from this run's past rounds: per-position conditional
  acceptance counts, shrunk towards the pooled alpha where a position has few observations;
- T(B, 0) is a decode step; T(B, gamma) one SD round (gamma draft tokens, a verify of gamma + 1 tokens per row,
  rejection), from Algorithm 1's step times (moesd.perf: the physical prior, or `moesd fit` parameters),
  each stage rescaled by the median ratio of what this run measured to what the model predicted, so the choice
  adapts to the machine it runs on.
gamma = 0 is plain decoding: where SD loses the engine stops speculating, and after `probe_every` such steps
it speculates once (with the best gamma >= 1) so the acceptance estimate stays current.

Why this keeps SD lossless: the chosen gamma is a function of the batch size, of acceptance outcomes of earlier
rounds and of earlier stage timings only, never of the current round's draft tokens or of the draft / target
probabilities being compared. Given the history, each round is then an ordinary speculative-sampling round with
a fixed draft length, whose output is distributed exactly as the target's (Leviathan et al., Theorem 1; greedy:
identical tokens); a gamma chosen in advance from the past cannot bias which tokens the round accepts.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, deque

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.step_time import StepContext, StepTimeParams, step_times

STAGES = ("decode", "verify", "draft", "reject")


class PositionAcceptance:
    """Per-position acceptance counts over a run: position i is *offered* when a row drafted more than i tokens
    and its first i were accepted; it is *accepted* when the (i+1)-th was accepted too."""

    def __init__(self, max_gamma: int, prior_strength: float = 2.0) -> None:
        self.offered = [0] * max_gamma
        self.accepted = [0] * max_gamma
        self.prior_strength = prior_strength

    def record(self, accepted: list[int], drafted: list[int]) -> None:
        for a, g in zip(accepted, drafted):
            for i in range(min(g, len(self.offered))):
                if i > a:
                    break
                self.offered[i] += 1
                self.accepted[i] += int(i < a)

    @property
    def alpha(self) -> float:
        """Pooled per-token acceptance with a uniform Beta(1, 1) prior: 0.5 before any round."""
        acc = sum(self.accepted)
        return (acc + 1.0) / (sum(self.offered) + 2.0)

    def conditional(self, i: int, alpha: float | None = None) -> float:
        """P(accept position i | positions < i accepted), shrunk towards the pooled alpha."""
        k = self.prior_strength
        return (self.accepted[i] + k * (self.alpha if alpha is None else alpha)) / (self.offered[i] + k)

    def per_position(self, gamma: int) -> list[float]:
        """P(the first i + 1 draft tokens are all accepted), i < gamma (vLLM's per-position acceptance rate)."""
        out, survive, alpha = [], 1.0, self.alpha
        for i in range(gamma):
            survive *= self.conditional(i, alpha)
            out.append(survive)
        return out

    def expected_tokens(self, gamma: int) -> float:
        """Tokens one row commits in a round of draft length gamma, the bonus token included."""
        return 1.0 + sum(self.per_position(gamma))


class StepCostModel:
    """Algorithm 1's stage times for this target (and draft), each rescaled by what this run measured: the median
    of the last `window` measured / predicted ratios of that stage at that draft length (verify and draft costs
    grow with gamma differently on different machines), else of that stage at any draft length, else of the
    sibling forward (decode <-> verify), else 1."""

    def __init__(self, params: StepTimeParams, ctx: StepContext, num_experts: int, top_k: int,
                 window: int = 32, source: str = "prior", max_gamma: int = 16) -> None:
        self.params, self.ctx, self.max_gamma = params, ctx, max_gamma
        self.num_experts, self.top_k = num_experts, top_k
        self.window = window
        self.ratios: dict[tuple[str, int | None], deque] = {}
        self.source = source
        self._cache: dict[tuple[int, int], dict] = {}
        self._scale_cache: dict[tuple[str, int], float] = {}

    def predicted(self, b: int, g: int) -> dict:
        if (b, g) not in self._cache:
            # One vectorised evaluation per batch size, for every draft length (the decision runs every step).
            gs = np.arange(1, max(self.max_gamma, g) + 1)
            t = step_times(self.params, self.ctx, np.full(gs.shape, b), gs, self.num_experts, self.top_k)
            for i, gi in enumerate(gs.tolist()):
                self._cache[(b, gi)] = {"decode": float(t["target_decode_s"][i]),
                                        "verify": float(t["target_verify_s"][i]),
                                        "draft": float(t["draft_s"][i]), "reject": float(t["reject_s"][i])}
            self._cache[(b, 0)] = self._cache[(b, 1)]
        return self._cache[(b, g)]

    def scale(self, stage: str, g: int = 0) -> float:
        key = (stage, g)
        if key not in self._scale_cache:
            sibling = {"decode": "verify", "verify": "decode"}.get(stage)
            value = 1.0
            for k in ((stage, g), (stage, None), (sibling, None)):
                if k[0] is not None and self.ratios.get(k):
                    value = statistics.median(self.ratios[k])
                    break
            self._scale_cache[key] = value
        return self._scale_cache[key]

    def round_s(self, b: int, g: int) -> float:
        p = self.predicted(b, g)
        if g == 0:
            return self.scale("decode") * p["decode"]
        return (g * self.scale("draft", g) * p["draft"] + self.scale("verify", g) * p["verify"]
                + self.scale("reject", g) * p["reject"])

    def _add(self, stage: str, g: int, ratio: float) -> None:
        for key in ((stage, g), (stage, None)):
            self.ratios.setdefault(key, deque(maxlen=self.window)).append(ratio)

    def observe(self, b: int, g: int, target_s: float, draft_s: float, reject_s: float) -> None:
        p = self.predicted(b, g)
        pairs = ([("decode", target_s, p["decode"])] if g == 0 else
                 [("verify", target_s, p["verify"]), ("draft", draft_s, g * p["draft"]),
                  ("reject", reject_s, p["reject"])])
        for stage, measured, predicted in pairs:
            if measured > 0 and predicted > 0:
                self._add(stage, g, measured / predicted)
        self._scale_cache.clear()

    def scales(self) -> dict:
        """Each stage's scale over all draft lengths (what the report shows)."""
        return {s: statistics.median(self.ratios[(s, None)]) if self.ratios.get((s, None)) else self.scale(s)
                for s in STAGES}


class AdaptiveGamma:
    """One run's draft-length policy (a fresh one per `generate` call)."""

    def __init__(self, max_gamma: int, cost: StepCostModel, probe_every: int = 16, trace_limit: int = 4096) -> None:
        if max_gamma < 1:
            raise MoesdError(f"--gamma auto needs a maximum draft length >= 1, got {max_gamma}")
        if probe_every < 1:
            raise MoesdError(f"probe interval must be >= 1, got {probe_every}")
        self.max_gamma, self.cost, self.probe_every = max_gamma, cost, probe_every
        self.acceptance = PositionAcceptance(max_gamma)
        self.zero_run = 0
        self.decision_s = 0.0
        self.decisions = 0
        self.histogram: Counter = Counter()
        self.trace: list[dict] = []
        self.trace_limit = trace_limit

    def choose(self, batch_size: int, room: int) -> int:
        """The draft length for the next step of `batch_size` rows, of which the longest may still take `room`
        tokens (drafting past it would be wasted)."""
        t0 = time.perf_counter()
        top = max(0, min(self.max_gamma, room - 1))
        tokens = [1.0]
        for p in self.acceptance.per_position(top):
            tokens.append(tokens[-1] + p)
        rates = {g: tokens[g] / self.cost.round_s(batch_size, g) for g in range(top + 1)}
        best = max(rates, key=lambda g: (rates[g], -g))  # ties: the shorter draft
        probe = False
        if best == 0 and top >= 1:
            self.zero_run += 1
            if self.zero_run >= self.probe_every:
                best = max(range(1, top + 1), key=lambda g: rates[g])
                probe, self.zero_run = True, 0
        else:
            self.zero_run = 0
        self.decision_s += time.perf_counter() - t0
        self.decisions += 1
        self.histogram[best] += 1
        if len(self.trace) < self.trace_limit:
            self.trace.append({"batch_size": batch_size, "gamma": best, "probe": probe,
                               "predicted_gain": rates[best] / rates[0],
                               "expected_tokens": tokens[best]})
        return best

    def observe_round(self, accepted: list[int], drafted: list[int]) -> None:
        self.acceptance.record(accepted, drafted)

    def observe_times(self, batch_size: int, gamma: int, target_s: float, draft_s: float, reject_s: float) -> None:
        self.cost.observe(batch_size, gamma, target_s, draft_s, reject_s)

    def summary(self) -> dict:
        return {"max_gamma": self.max_gamma, "cost_model": self.cost.source,
                "gamma_histogram": {str(g): n for g, n in sorted(self.histogram.items())},
                "mean_gamma": (sum(g * n for g, n in self.histogram.items()) / self.decisions
                               if self.decisions else 0.0),
                "decisions": self.decisions, "decision_s": self.decision_s,
                "decision_us_per_step": 1e6 * self.decision_s / self.decisions if self.decisions else 0.0,
                "alpha_estimate": self.acceptance.alpha,
                "per_position_acceptance": self.acceptance.per_position(self.max_gamma),
                "stage_scales": self.cost.scales(), "trace": self.trace}
