"""`--gamma auto`: choose the draft length every step from predicted cost and observed acceptance (lossless).

Each step, for the B rows still generating, the policy picks gamma in 0..G_max maximising expected committed
tokens per second, E[tokens | gamma] / T(B, gamma):
- E[tokens | gamma] = 1 + sum_{i < gamma} p_i, with p_i the probability that the first i + 1 draft tokens are all
  accepted (vLLM's per-position acceptance rate), from this run's past rounds: Beta posteriors of per-position
  conditional acceptance, shrunk towards the pooled alpha where a position has few observations, and each
  step one draw from them (Thompson sampling: uncertain draft lengths get tried, certain ones exploited);
- T(B, 0) is a decode step; T(B, gamma) one SD round (gamma draft tokens, a verify of gamma + 1 tokens per row,
  rejection), from Algorithm 1's step times (moesd.perf: the physical prior, or `moesd fit` parameters),
  refined by what this run measures (StepCostModel: the target's forward as w0 + w1 x prior(n tokens) + w2 x n
  fitted to the run's forwards, draft and rejection maps, plus each kind of step's measured time outside
  these stages), so the choice adapts to the machine it runs on.
The choice goes at most to twice the longest draft length whose round the run has measured (1 -> 2 -> 4 -> 8:
a trust region on the cost model's extrapolation). gamma = 0 is plain decoding: where SD loses, or wins by less than a
margin (3 %) inside the cost model's error, the engine stops speculating,
and after a run of such steps it speculates once (with the best gamma >= 1) so the acceptance and cost
estimates stay current; the run it waits doubles after each probe that changed nothing (4, 8, 16, ... up to
`probe_every`), so a short generation still probes and a long one where SD loses pays little for probing; where
the model predicts SD far below decoding (under 0.8x) it waits the longest run (`probe_every`) at once.

Why this keeps SD lossless: the chosen gamma is a function of the batch size, of acceptance outcomes of earlier
rounds, of earlier stage timings and of the policy's own random draws only, never of the current round's draft
tokens or of the draft / target probabilities being compared. Given the history, each round is then an
ordinary speculative-sampling round with a fixed draft length, whose output is distributed exactly as the
target's (Leviathan et al., Theorem 1; greedy: identical tokens); a gamma chosen in advance from the past
cannot bias which tokens the round accepts.
"""

from __future__ import annotations

import time
from collections import Counter, deque

import numpy as np
# Imported with the module, not at the first refit: that import takes up to ~0.9 s here, which a short run would
# otherwise book as decision time (it did: auto at 0.78x its equal, gamma 1, on a 48-token run).
from scipy.optimize import nnls

from moesd.errors import MoesdError
from moesd.perf.step_time import StepContext, StepTimeParams, step_times



class PositionAcceptance:
    """Per-position acceptance counts over a run: in a round of draft length g, position i < g is *offered* to a
    row when its first i draft tokens were accepted, and *accepted* when the (i+1)-th was too. A row that drafted
    fewer than g tokens (prompt lookup found a short continuation, or none) counts as rejected where its draft
    ends: what matters for the choice is the tokens a round of length g commits, drafts that never came included.

    Estimates are Beta posteriors: the pooled alpha has a uniform prior, each position's conditional acceptance a
    prior centred on the pooled alpha with `prior_strength` pseudo-observations. Decisions draw from them
    (Thompson sampling): an uncertain estimate is sometimes tried long, so a few unlucky early rounds cannot switch
    SD off for good, and the draws concentrate as rounds accumulate."""

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
        """Posterior mean of the pooled per-token acceptance (uniform prior: 0.5 before any round)."""
        return (sum(self.accepted) + 1.0) / (sum(self.offered) + 2.0)

    def per_position(self, gamma: int, rng=None) -> list[float]:
        """P(the first i + 1 draft tokens are all accepted), i < gamma (vLLM's per-position acceptance rate): the
        posterior means, or one joint draw from the posteriors with `rng` (a numpy Generator)."""
        acc, off, k = sum(self.accepted), sum(self.offered), self.prior_strength
        alpha = rng.beta(acc + 1.0, off - acc + 1.0) if rng is not None else self.alpha
        out, survive = [], 1.0
        for i in range(gamma):
            a = self.accepted[i] + k * alpha
            b = self.offered[i] - self.accepted[i] + k * (1.0 - alpha)
            survive *= rng.beta(a, b) if rng is not None else a / (a + b)
            out.append(survive)
        return out

    def expected_tokens(self, gamma: int) -> float:
        """Tokens one row commits in a round of draft length gamma, the bonus token included (posterior means)."""
        return 1.0 + sum(self.per_position(gamma))


class RequestAcceptance:
    """Each request's own acceptance, relative to the pooled one. Requests differ (the synthetic spread, or real
    prompts: code that copies its context vs free text), and which ones are still running is not random: rows that
    accept more finish first, so at the end of a static batch the survivors accept less than the pool says (one
    stdlib run's last row committed 1 token per round at gamma 2-4 while the pooled estimate said 2.1-3.2).

    A request's alpha is a Beta posterior centred on the pooled alpha with `prior_strength` pseudo-observations;
    its per-position acceptance is the pooled curve rescaled by (alpha_r / alpha)^(i + 1), capped at 1."""

    def __init__(self, prior_strength: float = 4.0) -> None:
        self.accepted: dict[int, int] = {}
        self.rejected: dict[int, int] = {}
        self.prior_strength = prior_strength

    def record(self, rows: list[int], accepted: list[int], drafted: list[int]) -> None:
        for r, a, g in zip(rows, accepted, drafted):
            self.accepted[r] = self.accepted.get(r, 0) + a
            self.rejected[r] = self.rejected.get(r, 0) + int(a < g)

    def ratios(self, rows: list[int], pooled_alpha: float) -> np.ndarray:
        """alpha_r / alpha per row (1 for a request not seen yet)."""
        k = self.prior_strength
        acc = np.array([self.accepted.get(r, 0) for r in rows], dtype=float)
        rej = np.array([self.rejected.get(r, 0) for r in rows], dtype=float)
        alpha_r = (acc + k * pooled_alpha) / (acc + rej + k)
        return alpha_r / max(pooled_alpha, 1e-9)

    @staticmethod
    def mean_tokens(per_position: list[float], ratios: np.ndarray) -> list[float]:
        """Mean over the rows of the tokens a round of each draft length 0..len(per_position) commits."""
        if len(ratios) == 0:
            ratios = np.ones(1)
        p = np.asarray(per_position, dtype=float)
        i = np.arange(1, len(p) + 1)
        rows = np.minimum(1.0, p[None, :] * ratios[:, None] ** i[None, :])  # [rows, positions]
        return [1.0] + (1.0 + np.cumsum(rows, axis=1)).mean(axis=0).tolist()


class _OnlineMap:
    """measured ~ w . features, w >= 0, by non-negative least squares on the last `window` observations, using as
    many leading features as distinct feature rows have been seen (at most `max_features`): with one, only a scale
    on feature 1 (the prior's prediction; the median measured / predicted ratio); with two, the first two (the
    target: a per-forward constant and a scale on the prior, pinned by one decode and one verify size); with three,
    all. Using what two points pin matters: the prior's shape over token counts can be far off (a CPU prior prices
    a 2-token verify at ~2 decodes where the machine takes ~1.35), and a scale alone keeps that shape.
    The decision runs every step and a refit costs ~0.2 ms of numpy/scipy (what made the in-run decision cost
    0.6-1.7 ms per step before), so the fit is redone after the 1st, 2nd, 4th and 8th observation and then every
    `refit_every`, and at once when a feature row not seen before arrives: that is the first measurement of a
    draft length (or batch size) the policy has just extrapolated to, and the next choice must see it (without
    it, one SmolLM2 run ramped gamma 3 -> 6 at B = 13 on a fit that priced a 91-token verify like a 13-token
    decode, while each longer round measured ~2x a decode)."""

    def __init__(self, window: int, max_features: int, refit_every: int = 8) -> None:
        self.rows: deque = deque(maxlen=window)
        self.max_features = max_features
        self.refit_every = refit_every
        self._w: np.ndarray | None = None
        self._since_fit = 0
        self._seen: set = set()  # distinct feature rows (rounded) ever observed

    def add(self, features: tuple, measured: float) -> None:
        if measured > 0 and features[1] > 0:
            self.rows.append((features, measured))
            self._since_fit += 1
            key = tuple(round(f, 12) for f in features)
            new = key not in self._seen
            self._seen.add(key)
            n = len(self.rows)
            if new or n in (1, 2, 4, 8) or self._since_fit >= self.refit_every:
                self._w = None

    def __bool__(self) -> bool:
        return bool(self.rows)

    def weights(self) -> np.ndarray:
        if self._w is None:
            x = np.array([f for f, _ in self.rows], dtype=float)
            y = np.array([m for _, m in self.rows], dtype=float)
            w = np.zeros(x.shape[1])
            w[1] = float(np.median(y / x[:, 1]))
            k = min(len(self._seen), self.max_features, x.shape[1])
            if k >= 2:
                norm = x[:, :k].max(axis=0)
                norm[norm == 0] = 1.0
                fitted, _ = nnls(x[:, :k] / norm, y)
                if np.any(fitted > 0):
                    w = np.zeros(x.shape[1])
                    w[:k] = fitted / norm
            self._w = w
            self._since_fit = 0
        return self._w

    def __call__(self, features: tuple) -> float:
        return float(np.dot(self.weights(), features))


class StepCostModel:
    """Algorithm 1's stage times for this target (and draft), refined by what this run measures.

    A target forward of n tokens costs w0 + w1 * prior(n) + w2 * n (non-negative weights fitted to every decode
    and verify forward of the run): the prior's shape over token counts (the MoE's concave expert loading
    included) with this machine's level, a per-forward overhead and a per-token term where the machine is more
    compute-bound than the prior says (the CPU prior alone is ~3x off, docs/results.md section 13). A draft round
    of g forwards costs g (v0 + v1 * prior draft forward); rejection a scale on its prior. Until a stage has been
    measured, the target's scale stands in for it."""

    def __init__(self, params: StepTimeParams, ctx: StepContext, num_experts: int, top_k: int,
                 window: int = 64, source: str = "prior", max_gamma: int = 16,
                 predictions: dict | None = None) -> None:
        self.params, self.ctx, self.max_gamma = params, ctx, max_gamma
        self.num_experts, self.top_k = num_experts, top_k
        self.maps = {"target": _OnlineMap(window, 3), "draft": _OnlineMap(window, 2),
                     "reject": _OnlineMap(window, 1)}
        self.source = source
        # Seconds per step outside the three stages (acceptance bookkeeping, cache trims, the proposer's update,
        # the decision itself), per kind of step: a round does more of it than a decode step (stdlib B = 4: 3.5 %
        # of a round's time, 1.2 % of a decode step's), which is the size of the goal's 3 % margin. Medians of
        # the last few steps: a descheduled step must not move them.
        self._outside = {False: deque(maxlen=15), True: deque(maxlen=15)}
        self._outside_s = {False: 0.0, True: 0.0}
        # Prior predictions per (batch size, gamma): the same for every run of one engine, so its factory shares
        # one table between the policies it makes (the first fill, ~ms, then happens before any run).
        self._cache: dict[tuple[int, int], dict] = predictions if predictions is not None else {}

    def predicted(self, b: int, g: int) -> dict:
        if (b, g) not in self._cache:
            # One vectorised evaluation for every batch size up to this one (at least 64) and every draft length:
            # batch sizes change as rows finish, and the decision runs every step.
            top = max(self.max_gamma, g)
            bs, gs = np.meshgrid(np.arange(1, max(b, 64) + 1), np.arange(1, top + 1), indexing="ij")
            t = step_times(self.params, self.ctx, bs.ravel(), gs.ravel(), self.num_experts, self.top_k)
            for i, (bi, gi) in enumerate(zip(bs.ravel().tolist(), gs.ravel().tolist())):
                self._cache[(bi, gi)] = {"decode": float(t["target_decode_s"][i]),
                                         "verify": float(t["target_verify_s"][i]),
                                         "draft": float(t["draft_s"][i]), "reject": float(t["reject_s"][i])}
                if gi == 1:
                    self._cache[(bi, 0)] = self._cache[(bi, 1)]
        return self._cache[(b, g)]

    def _features(self, b: int, g: int) -> dict:
        p = self.predicted(b, g)
        tokens = b * (g + 1) if g else b
        return {"target": (1.0, p["verify"] if g else p["decode"], float(tokens)),
                "draft": (float(g), g * p["draft"]), "reject": (0.0, p["reject"])}

    def _stage(self, name: str, features: tuple) -> float:
        m = self.maps[name]
        if m:
            return m(features)
        target = self.maps["target"]
        return (target.weights()[1] if target else 1.0) * features[1]

    def round_s(self, b: int, g: int) -> float:
        """Predicted seconds of one step: a decode step (g = 0) or a round of draft length g, whole."""
        f = self._features(b, g)
        if g == 0:
            return self._stage("target", f["target"]) + self._outside_s[False]
        return (self._stage("target", f["target"]) + self._stage("draft", f["draft"])
                + self._stage("reject", f["reject"]) + self._outside_s[True])

    def observe(self, b: int, g: int, target_s: float, draft_s: float, reject_s: float,
                step_s: float | None = None) -> None:
        """One measured step: its stages and, with `step_s`, the whole step (the rest is its outside time)."""
        f = self._features(b, g)
        self.maps["target"].add(f["target"], target_s)
        if g:
            self.maps["draft"].add(f["draft"], draft_s)
            self.maps["reject"].add(f["reject"], reject_s)
        if step_s is not None:
            seen = self._outside[g > 0]
            seen.append(max(0.0, step_s - target_s - draft_s - reject_s))
            self._outside_s[g > 0] = float(np.median(seen))

    def scales(self) -> dict:
        """The fitted weights of each map (target: per forward s, x prior, per token s; draft: per forward s,
        x prior; reject: x prior) and the seconds per step outside them (decode step, round)."""
        out = {name: [float(w) for w in m.weights()] for name, m in self.maps.items() if m}
        out["outside_s"] = {"decode": self._outside_s[False], "round": self._outside_s[True]}
        return out


class AdaptiveGamma:
    """One run's draft-length policy (a fresh one per `generate` call)."""

    def __init__(self, max_gamma: int, cost: StepCostModel, probe_every: int = 64, first_probe: int = 4,
                 trace_limit: int = 4096, seed: int = 0, margin: float = 0.03, probe_gain: float = 0.8) -> None:
        if max_gamma < 1:
            raise MoesdError(f"--gamma auto needs a maximum draft length >= 1, got {max_gamma}")
        if not 1 <= first_probe <= probe_every:
            raise MoesdError(f"probe intervals must satisfy 1 <= first {first_probe} <= longest {probe_every}")
        if not 0.0 <= margin < 1.0:
            raise MoesdError(f"the speculation margin must be in [0, 1), got {margin}")
        self.max_gamma, self.cost, self.probe_every = max_gamma, cost, probe_every
        # Speculate only where the predicted gain over decoding exceeds this: the cost model's error on this CPU
        # is ~10 % step to step, and a predicted gain inside it is a coin flip whose loss side is what the
        # "never more than 3 % below autoregressive" goal forbids, while decoding there gives up at most the
        # margin (one SmolLM2 run at B = 16 speculated on predicted gains of 1.03-1.09 and lost 13 %).
        self.margin = margin
        if not 0.0 <= probe_gain <= 1.0:
            raise MoesdError(f"the probing threshold must be in [0, 1], got {probe_gain}")
        self.probe_gain = probe_gain
        self.first_probe = first_probe
        self.wait = first_probe
        self.acceptance = PositionAcceptance(max_gamma)
        self.requests = RequestAcceptance()
        # Its own generator: the draws never touch the sampling generator, so outputs do not depend on them.
        self.rng = np.random.default_rng(seed + 104729)
        self.zero_run = 0
        self.longest_measured = 0  # the longest draft length whose round the cost model has seen
        self.decode_measured = False  # whether the cost model has seen a plain decode step
        self.decision_s = 0.0
        self.decisions = 0
        self.histogram: Counter = Counter()
        self.trace: list[dict] = []
        self.trace_limit = trace_limit

    def choose(self, batch_size: int, room: int, minimum: int = 0, rows: list[int] | None = None) -> int:
        """The draft length for the next step of `batch_size` rows, of which the longest may still take `room`
        tokens (drafting past it would be wasted); `minimum` 1 where the step must speculate (the first round,
        merged with the target's prefill). `rows`: the request ids of the rows, so each request's own acceptance
        counts (without them every row is taken to accept like the pool)."""
        t0 = time.perf_counter()
        # A trust region on the cost model: at most twice the longest draft length it has measured (one more
        # from 1). Its shape over token counts comes from the prior, which can be far off (a CPU is more
        # compute-bound than its roofline), and one extrapolated round of a long draft at a large batch costs
        # many decode steps; doubling bounds that round to ~2x a measured one. One length per step was the first
        # rule: at high acceptance a 32-token stdlib run at B = 1 (~12 rounds) spent 5 of them ramping 1 -> 6.
        reach = max(self.longest_measured + 1, 2 * self.longest_measured)
        top = max(minimum, min(self.max_gamma, room - 1, reach))
        per_position = self.acceptance.per_position(top, self.rng)
        if rows:
            tokens = self.requests.mean_tokens(per_position, self.requests.ratios(rows, self.acceptance.alpha))
        else:
            tokens = [1.0]
            for p in per_position:
                tokens.append(tokens[-1] + p)
        rates = {g: tokens[g] / self.cost.round_s(batch_size, g) for g in range(minimum, top + 1)}
        best = max(rates, key=lambda g: (rates[g], -g))  # ties: the shorter draft
        if best > 0 and 0 in rates and rates[best] < (1.0 + self.margin) * rates[0]:
            best = 0
        probe = False
        if best == 0 and top >= 1:
            self.zero_run += 1
            # No SD round has been measured yet (the merged first round is not priced, and until one is, a "SD
            # loses" verdict rests on the prior's shape alone), or `wait` plain steps have run and the verdict is
            # close enough for the model's error to flip it (the best draft length predicted at >= `probe_gain`
            # of decoding), or `probe_every` have run: this one probes. Far verdicts are not probed every few
            # steps: a probe where SD clearly loses costs a round, and with a draft model the draft's catch-up on
            # every token decoded since. (It did not thin the probes of stdlib B = 64, five rounds in 32 steps:
            # their verdicts were predicted >= 0.8x; docs/results.md section 15.)
            sd = max(range(1, top + 1), key=lambda g: rates[g])
            close = rates[sd] >= self.probe_gain * rates[0]
            if self.longest_measured == 0 or (self.zero_run > self.wait and close) \
                    or self.zero_run > self.probe_every:
                best = sd
                probe, self.zero_run = True, 0
                self.wait = min(2 * self.wait, self.probe_every)
        elif best > 0 and not self.decode_measured and self.longest_measured > 0 and minimum == 0:
            # The other side of the comparison must be measured too: a decode cost extrapolated from verify
            # forwards alone kept one stdlib run speculating at B = 64 (0.79x autoregressive) where decoding wins.
            best, probe = 0, True
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

    def observe_round(self, accepted: list[int], drafted: list[int], rows: list[int] | None = None) -> None:
        self.acceptance.record(accepted, drafted)
        if rows is not None:
            self.requests.record(rows, accepted, drafted)

    def observe_times(self, batch_size: int, gamma: int, target_s: float, draft_s: float, reject_s: float,
                      step_s: float | None = None) -> None:
        self.cost.observe(batch_size, gamma, target_s, draft_s, reject_s, step_s)
        self.longest_measured = max(self.longest_measured, gamma)
        self.decode_measured |= gamma == 0

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
