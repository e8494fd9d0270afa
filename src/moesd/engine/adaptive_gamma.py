"""`--gamma auto`: choose the draft length every step from predicted cost and observed acceptance (lossless).

Each step, for the B rows still generating, the policy picks gamma in 0..G_max maximising expected committed
tokens per second, E[tokens | gamma] / T(B, gamma):
- E[tokens | gamma] = 1 + sum_{i < gamma} p_i, with p_i the probability that the first i + 1 draft tokens are all
  accepted (vLLM's per-position acceptance rate), estimated from this run's past rounds: per-position conditional
  acceptance counts, shrunk towards the pooled alpha where a position has few observations;
- T(B, 0) is a decode step; T(B, gamma) one SD round (gamma draft tokens, a verify of gamma + 1 tokens per row,
  rejection), from Algorithm 1's step times (moesd.perf: the physical prior, or `moesd fit` parameters),
  refined by what this run measures (an affine map per stage: the model's shape over token counts, the
  machine's level and per-call overhead), so the choice adapts to the machine it runs on.
gamma = 0 is plain decoding: where SD loses the engine stops speculating, and after a run of such steps it
speculates once (with the best gamma >= 1) so the acceptance and cost estimates stay current; the run it waits
doubles after each probe that changed nothing (4, 8, 16, ... up to `probe_every`), so a short generation still
probes and a long one where SD loses pays little for probing.

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



class PositionAcceptance:
    """Per-position acceptance counts over a run: in a round of draft length g, position i < g is *offered* to a
    row when its first i draft tokens were accepted, and *accepted* when the (i+1)-th was too. A row that drafted
    fewer than g tokens (prompt lookup found a short continuation, or none) counts as rejected where its draft
    ends: what matters for the choice is the tokens a round of length g commits, drafts that never came included."""

    def __init__(self, max_gamma: int, prior_strength: float = 2.0, optimism: float = 0.5) -> None:
        self.offered = [0] * max_gamma
        self.accepted = [0] * max_gamma
        self.prior_strength = prior_strength
        # Decisions use the posterior mean plus `optimism` posterior standard deviations: a few unlucky early
        # rounds must not switch speculation off for good (the optimism fades as observations accumulate).
        self.optimism = optimism

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
        """P(accept position i | positions < i accepted): the mean of a Beta posterior whose prior is the pooled
        alpha with `prior_strength` pseudo-observations, plus `optimism` standard deviations (capped at 1)."""
        k = self.prior_strength
        n = self.offered[i] + k
        mean = (self.accepted[i] + k * (self.alpha if alpha is None else alpha)) / n
        return min(1.0, mean + self.optimism * (mean * (1.0 - mean) / (n + 1.0)) ** 0.5)

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


class _Affine:
    """measured ~ fixed + scale x predicted, fitted by least squares on the last `window` pairs: the prior's shape
    over token counts (the MoE's concave expert loading included) with this machine's level and per-call
    overhead. With too little spread in the predictions to separate the two, only the scale (median ratio)."""

    def __init__(self, window: int) -> None:
        self.pairs: deque = deque(maxlen=window)
        self._fit: tuple[float, float] | None = None

    def add(self, predicted: float, measured: float) -> None:
        if predicted > 0 and measured > 0:
            self.pairs.append((predicted, measured))
            self._fit = None

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def fit(self) -> tuple[float, float]:
        if self._fit is None:
            xs = np.array([p for p, _ in self.pairs])
            ys = np.array([m for _, m in self.pairs])
            fixed, scale = 0.0, float(np.median(ys / xs))
            if len(xs) >= 4 and xs.max() > 1.2 * xs.min():
                slope, intercept = np.polyfit(xs, ys, 1)
                if slope > 0 and intercept >= 0:
                    fixed, scale = float(intercept), float(slope)
            self._fit = (fixed, scale)
        return self._fit

    def __call__(self, predicted: float) -> float:
        fixed, scale = self.fit()
        return fixed + scale * predicted


class StepCostModel:
    """Algorithm 1's stage times for this target (and draft), refined by what this run measures: every target
    forward (decode or verify) refines one affine map of the predicted target time, every draft round one of
    the predicted draft time, rejection a scale; until a stage is measured, the target's map stands in for it
    (the prior alone is 3x off on the development CPU, docs/results.md section 13)."""

    def __init__(self, params: StepTimeParams, ctx: StepContext, num_experts: int, top_k: int,
                 window: int = 64, source: str = "prior", max_gamma: int = 16) -> None:
        self.params, self.ctx, self.max_gamma = params, ctx, max_gamma
        self.num_experts, self.top_k = num_experts, top_k
        self.maps = {"target": _Affine(window), "draft": _Affine(window), "reject": _Affine(window)}
        self.source = source
        self._cache: dict[tuple[int, int], dict] = {}

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

    def _stage(self, name: str, predicted: float) -> float:
        m = self.maps[name]
        if m:
            return m(predicted)
        target = self.maps["target"]
        return target.fit()[1] * predicted if target else predicted

    def round_s(self, b: int, g: int) -> float:
        p = self.predicted(b, g)
        if g == 0:
            return self._stage("target", p["decode"])
        return self._stage("target", p["verify"]) + self._stage("draft", g * p["draft"]) + \
            self._stage("reject", p["reject"])

    def observe(self, b: int, g: int, target_s: float, draft_s: float, reject_s: float) -> None:
        p = self.predicted(b, g)
        if g == 0:
            self.maps["target"].add(p["decode"], target_s)
        else:
            self.maps["target"].add(p["verify"], target_s)
            self.maps["draft"].add(g * p["draft"], draft_s)
            self.maps["reject"].add(p["reject"], reject_s)

    def scales(self) -> dict:
        """Each map's fixed cost (s) and scale on the prediction, as fitted now."""
        return {name: dict(zip(("fixed_s", "scale"), m.fit())) for name, m in self.maps.items() if m}


class AdaptiveGamma:
    """One run's draft-length policy (a fresh one per `generate` call)."""

    def __init__(self, max_gamma: int, cost: StepCostModel, probe_every: int = 64, first_probe: int = 4,
                 trace_limit: int = 4096) -> None:
        if max_gamma < 1:
            raise MoesdError(f"--gamma auto needs a maximum draft length >= 1, got {max_gamma}")
        if not 1 <= first_probe <= probe_every:
            raise MoesdError(f"probe intervals must satisfy 1 <= first {first_probe} <= longest {probe_every}")
        self.max_gamma, self.cost, self.probe_every = max_gamma, cost, probe_every
        self.first_probe = first_probe
        self.wait = first_probe
        self.acceptance = PositionAcceptance(max_gamma)
        self.zero_run = 0
        self.decision_s = 0.0
        self.decisions = 0
        self.histogram: Counter = Counter()
        self.trace: list[dict] = []
        self.trace_limit = trace_limit

    def choose(self, batch_size: int, room: int, minimum: int = 0) -> int:
        """The draft length for the next step of `batch_size` rows, of which the longest may still take `room`
        tokens (drafting past it would be wasted); `minimum` 1 where the step must speculate (the first round,
        merged with the target's prefill)."""
        t0 = time.perf_counter()
        top = max(minimum, min(self.max_gamma, room - 1))
        tokens = [1.0]
        for p in self.acceptance.per_position(top):
            tokens.append(tokens[-1] + p)
        rates = {g: tokens[g] / self.cost.round_s(batch_size, g) for g in range(minimum, top + 1)}
        best = max(rates, key=lambda g: (rates[g], -g))  # ties: the shorter draft
        probe = False
        if best == 0 and top >= 1:
            self.zero_run += 1
            if self.zero_run > self.wait:  # `wait` plain steps have run: this one probes
                best = max(range(1, top + 1), key=lambda g: rates[g])
                probe, self.zero_run = True, 0
                self.wait = min(2 * self.wait, self.probe_every)
        elif best > 0:
            self.zero_run, self.wait = 0, self.first_probe
        self.decision_s += time.perf_counter() - t0
        self.decisions += 1
        self.histogram[best] += 1
        if len(self.trace) < self.trace_limit:
            self.trace.append({"batch_size": batch_size, "gamma": best, "probe": probe,
                               "predicted_gain": rates[best] / self._decode_rate(batch_size, tokens),
                               "expected_tokens": tokens[best]})
        return best

    def _decode_rate(self, batch_size: int, tokens: list[float]) -> float:
        return tokens[0] / self.cost.round_s(batch_size, 0)

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
                "cost_maps": self.cost.scales(), "trace": self.trace}
