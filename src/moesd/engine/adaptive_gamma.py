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

    def conditional(self, i: int) -> float:
        """P(accept position i | positions < i accepted), shrunk towards the pooled alpha."""
        k = self.prior_strength
        return (self.accepted[i] + k * self.alpha) / (self.offered[i] + k)

    def expected_tokens(self, gamma: int) -> float:
        """Tokens one row commits in a round of draft length gamma, the bonus token included."""
        total, survive = 1.0, 1.0
        for i in range(gamma):
            survive *= self.conditional(i)
            total += survive
        return total

    def per_position(self, gamma: int) -> list[float]:
        out, survive = [], 1.0
        for i in range(gamma):
            survive *= self.conditional(i)
            out.append(survive)
        return out


class StepCostModel:
    """Algorithm 1's stage times for this target (and draft), each rescaled by the median of the last `window`
    measured / predicted ratios of that stage in this run."""

    def __init__(self, params: StepTimeParams, ctx: StepContext, num_experts: int, top_k: int,
                 window: int = 32, source: str = "prior") -> None:
        self.params, self.ctx = params, ctx
        self.num_experts, self.top_k = num_experts, top_k
        self.ratios = {s: deque(maxlen=window) for s in STAGES}
        self.source = source
        self._cache: dict[tuple[int, int], dict] = {}

    def predicted(self, b: int, g: int) -> dict:
        key = (b, g)
        if key not in self._cache:
            t = step_times(self.params, self.ctx, b, max(g, 1), self.num_experts, self.top_k)
            self._cache[key] = {"decode": float(t["target_decode_s"]), "verify": float(t["target_verify_s"]),
                                "draft": float(t["draft_s"]), "reject": float(t["reject_s"])}
        return self._cache[key]

    def scale(self, stage: str) -> float:
        own = self.ratios[stage]
        if own:
            return statistics.median(own)
        # Decode and verify run the same forward: until one is measured, the other's scale stands in.
        other = self.ratios.get({"decode": "verify", "verify": "decode"}.get(stage, ""), ())
        return statistics.median(other) if other else 1.0

    def round_s(self, b: int, g: int) -> float:
        p = self.predicted(b, g)
        if g == 0:
            return self.scale("decode") * p["decode"]
        return (g * self.scale("draft") * p["draft"] + self.scale("verify") * p["verify"]
                + self.scale("reject") * p["reject"])

    def observe(self, b: int, g: int, target_s: float, draft_s: float, reject_s: float) -> None:
        p = self.predicted(b, g)
        pairs = ([("decode", target_s, p["decode"])] if g == 0 else
                 [("verify", target_s, p["verify"]), ("draft", draft_s, g * p["draft"]),
                  ("reject", reject_s, p["reject"])])
        for stage, measured, predicted in pairs:
            if measured > 0 and predicted > 0:
                self.ratios[stage].append(measured / predicted)

    def scales(self) -> dict:
        return {s: self.scale(s) for s in STAGES}


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
        rates = {g: self.acceptance.expected_tokens(g) / self.cost.round_s(batch_size, g) for g in range(top + 1)}
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
                               "expected_tokens": self.acceptance.expected_tokens(best)})
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
