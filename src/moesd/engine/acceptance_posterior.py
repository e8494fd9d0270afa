"""What `--gamma auto` (engine/adaptive_gamma.py) knows of acceptance: per-position Beta posteriors pooled over a
run's rounds, and each request's own acceptance relative to the pool."""

from __future__ import annotations

import numpy as np


class PositionAcceptance:
    """Per-position acceptance counts over a run: in a round of draft length g, position i < g is *offered* to a
    row when its first i draft tokens were accepted, and *accepted* when the (i+1)-th was too. A row that drafted
    fewer than g tokens (prompt lookup found a short continuation, or none) counts as rejected where its draft
    ends: what matters for the choice is the tokens a round of length g commits, drafts that never came included.

    Estimates are Beta posteriors: the pooled alpha has a uniform prior, each position's conditional acceptance a
    prior centred on the pooled alpha with `prior_strength` pseudo-observations. `per_position` gives their means,
    or one draw from them (Thompson sampling).

    Earlier runs of the same engine can lend both a prior of the pooled alpha and one of each position's
    conditional acceptance (`carry`): pseudo-counts added to this run's own, capped so a few rounds of this run
    outweigh them."""

    def __init__(self, max_gamma: int, prior_strength: float = 2.0, pooled_prior: tuple[float, float] = (1.0, 1.0)):
        self.offered = [0] * max_gamma
        self.accepted = [0] * max_gamma
        self.prior_strength = prior_strength
        # Beta(a, b) prior of the pooled alpha: uniform, or centred on what the engine's earlier runs accepted
        # (AdaptiveGamma.carry_acceptance).
        self.pooled_prior = pooled_prior
        # (accepted, rejected) pseudo-counts per position from earlier runs: none until `carry`.
        self.position_prior = [(0.0, 0.0)] * max_gamma
        # How many requests the carried priors' centres stand for, pooled and per position: 0 until `carry`.
        self.prior_requests = 0.0
        self.position_requests = [0.0] * max_gamma

    def carry(self, earlier: "PositionAcceptance", weight: float, requests: int | None = None,
              memory: float = 32.0) -> None:
        """Start from the acceptance `earlier` measured, pooled and per position, each worth at most `weight`
        observations: centred on `earlier`'s estimates (`requests` None, the default), or with `requests`, on means
        over requests, not over the last run's rounds: `earlier`'s own rounds count as its `requests` requests beside
        the up to `memory` requests its own prior stood for (AdaptiveGamma's `carry_over_requests`). Requests differ
        and arrive in no order, so the last run's acceptance is one draw of the next request's: carried alone, a CPU
        MoE engine at B = 1 (alpha 0.2-0.9 per request) opened its calls on predicted gains from 0.65x to 1.6x as
        the previous request had accepted, and after a slow one decoded whole calls, 6 in a row (a one-off run of
        60 calls, docs/results.md section 15)."""
        if requests is None:
            self._carry_last_run(earlier, weight)
            return
        # A run without a round learns nothing: it hands on the centre it started from (`_carry_last_run`: not
        # pulled towards 0.5). Its own pooled estimate under a uniform prior lies strictly inside (0, 1).
        a0, b0 = earlier.pooled_prior
        centre, behind = a0 / (a0 + b0), earlier.prior_requests
        offered = sum(earlier.offered)
        new = float(requests) if offered else 0.0
        centre = _mean_over_requests(centre, behind, (sum(earlier.accepted) + 1.0) / (offered + 2.0), new)
        self.pooled_prior = ((weight + 2.0) * centre, (weight + 2.0) * (1.0 - centre))
        self.prior_requests = min(memory, behind + new)
        prior, behind_by_position = [], []
        for i in range(len(self.offered)):
            if i >= len(earlier.offered):
                prior.append((0.0, 0.0))
                behind_by_position.append(0.0)
                continue
            pa, pb = earlier.position_prior[i]
            off, seen = earlier.offered[i], earlier.position_requests[i] if pa + pb > 0 else 0.0
            centre = pa / (pa + pb) if pa + pb > 0 else 0.0
            new = float(requests) if off else 0.0
            centre = _mean_over_requests(centre, seen, earlier.accepted[i] / off if off else 0.0, new)
            n = min(weight, off + pa + pb)
            prior.append((n * centre, n * (1.0 - centre)) if n > 0 else (0.0, 0.0))
            behind_by_position.append(min(memory, seen + new))
        self.position_prior, self.position_requests = prior, behind_by_position

    def _carry_last_run(self, earlier: "PositionAcceptance", weight: float) -> None:
        """`carry` centred on `earlier`'s estimates (its own counts and what it had carried itself)."""
        alpha = earlier.alpha
        # Centred on the earlier mean itself: (1 + w alpha, 1 + w (1 - alpha)) pulled it 2 / (w + 2) of the way to
        # 0.5 at every carry, and an engine that decoded every step of its calls (no rounds, nothing new learnt)
        # forgot what it had measured: stdlib B = 4 read 0.76 after its last round and 0.54 seven decoding calls
        # later (`benchmarks/adaptive_gamma_diagnose.py --alternate stdlib:4 --calls 10`). The same total weight;
        # the earlier mean lies strictly inside (0, 1), so both pseudo-counts stay positive.
        self.pooled_prior = ((weight + 2.0) * alpha, (weight + 2.0) * (1.0 - alpha))
        prior = []
        for i in range(len(self.offered)):
            if i < len(earlier.offered):
                pa, pb = earlier.position_prior[i]
                acc, total = earlier.accepted[i] + pa, earlier.offered[i] + pa + pb
            else:
                acc = total = 0.0
            n = min(weight, total)
            prior.append((n * acc / total, n * (1.0 - acc / total)) if total > 0 else (0.0, 0.0))
        self.position_prior = prior

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
        a0, b0 = self.pooled_prior
        return (sum(self.accepted) + a0) / (sum(self.offered) + a0 + b0)

    def per_position(self, gamma: int, rng=None, optimism: float = 0.0) -> list[float]:
        """P(the first i + 1 draft tokens are all accepted), i < gamma (vLLM's per-position acceptance rate): the
        posterior means, or one joint draw from the posteriors with `rng` (a numpy Generator). `optimism`: that
        many accepted pseudo-observations added at each position, an exploration bonus that lifts a position
        observed a few times and fades as its observations grow (AdaptiveGamma's probe length)."""
        acc, off, k = sum(self.accepted), sum(self.offered), self.prior_strength
        a0, b0 = self.pooled_prior
        alpha = rng.beta(acc + a0, off - acc + b0) if rng is not None else self.alpha
        out, survive = [], 1.0
        for i in range(gamma):
            pa, pb = self.position_prior[i]
            a = self.accepted[i] + pa + k * alpha + optimism
            b = self.offered[i] - self.accepted[i] + pb + k * (1.0 - alpha)
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
        self.started: set[int] = set()  # requests whose first round has been seen (`record`)
        self.rounds: dict[int, int] = {}  # rounds counted in each request's own estimate
        self.prior_strength = prior_strength
        # Each request's first round (accepted, rejected), kept apart from its own estimate (`record`), and, over
        # the requests that then ran later rounds, the first rounds' and the later rounds' pooled outcomes
        # [first accepted, first rejected, later accepted, later rejected] (`first_rounds_count`; carried).
        self.first: dict[int, tuple[int, int]] = {}
        self.boundary = np.zeros(4)
        self.boundary_requests = 0.0  # the requests behind `boundary`
        self.first_evidence = True  # False: first rounds never count in a request's own estimate
        # Every first round's outcomes [accepted, rejected] and how many (carried): what a round merged with the
        # target's prefill can expect (`first_round_factor`).
        self.first_pool, self.first_count = np.zeros(2), 0.0
        # Sorted logit(alpha_r) - logit(alpha) of the requests of earlier runs (`carry`): how far requests spread,
        # though not which new request is which. Empty: every request not seen yet is taken to accept like the pool.
        # Log-odds, not alpha_r / alpha: the pool moves between runs, and a ratio measured under a pool of 0.68
        # (1.34 for a request at 0.91) put that request at 1.07 under the next run's 0.80, every draft accepted.
        self.spread = np.empty(0)

    def carry(self, earlier: "RequestAcceptance", pooled_alpha: float, min_rounds: int = 2) -> None:
        """Keep how far `earlier`'s requests spread around its pooled alpha (those with at least `min_rounds` rounds
        in their own estimate; `earlier`'s own carried spread where fewer than two had). Counted in rounds, not in
        acceptance outcomes: a round offers a row one outcome per accepted draft and one for the rejection, so a
        count of outcomes (4, the first rule) kept the rows that accepted most: stdlib B = 4 runs whose second round
        was their last carried a spread of their two fast requests alone (ratios 1.14, 1.14; in another 1.20, 1.20),
        and the next runs took all four new rows for fast ones and opened with gamma 6 rounds on a predicted 1.80x
        and 2.05x (docs/results.md section 15, change 20)."""
        # The evidence on first rounds carries too, worth at most `boundary_memory` requests: whether a request's
        # first round tells of its acceptance is a property of the draft and the prompts, not of one call.
        scale = min(1.0, self.boundary_memory / max(earlier.boundary_requests, 1e-9))
        self.boundary, self.boundary_requests = earlier.boundary * scale, earlier.boundary_requests * scale
        scale = min(1.0, self.boundary_memory / max(earlier.first_count, 1e-9))
        self.first_pool, self.first_count = earlier.first_pool * scale, earlier.first_count * scale
        seen = [r for r, n in earlier.rounds.items() if n >= min_rounds]
        if len(seen) >= 2:
            self.spread = np.sort(_logit(earlier.ratios(seen, pooled_alpha) * pooled_alpha) - _logit(pooled_alpha))
        else:
            self.spread = earlier.spread

    def spread_ratios(self, pooled_alpha: float) -> np.ndarray:
        """The carried spread as alpha_r / alpha under a pool of `pooled_alpha` (sorted)."""
        return _ratios_at(self.spread, pooled_alpha)

    def record(self, rows: list[int], accepted: list[int], drafted: list[int]) -> None:
        """A request's first round is left out of its own estimate (it still counts in the pool): its drafts
        continue the prompt, where the draft disagrees with the target far more often than later (stdlib, gamma
        6: the first round accepted 0, 0, 1 and 1 drafts in the four rows, the later ones 2.5 on average; SmolLM2
        with prompt lookup: 0 in all 16 rows, later 0.24 at gamma 2). Counting it marked every such request slow
        after one round, and at B = 1 the next round drafted 3 tokens where 7 were then accepted per round.
        Replayed over the rounds of fixed-gamma runs (`benchmarks/adaptive_gamma_diagnose.py --calibrate`), the
        expected tokens per row and round came closer to what was committed at stdlib B = 1, 4 and 16 (rms error
        2.62 -> 2.07 at B = 1, gamma 6; 2.03 -> 1.96 at B = 16, gamma 6) and stayed within 2 % elsewhere (the
        CPU MoE's synthetic acceptance has no such boundary)."""
        for r, a, g in zip(rows, accepted, drafted):
            if r not in self.started:
                self.started.add(r)
                self.first[r] = (a, int(a < g))
                self.first_pool += self.first[r]
                self.first_count += 1
                continue
            if r not in self.rounds:  # its second round: its first now has later rounds to be compared with
                self.boundary[:2] += self.first[r]
                self.boundary_requests += 1
            self.boundary[2:] += (a, int(a < g))
            self.accepted[r] = self.accepted.get(r, 0) + a
            self.rejected[r] = self.rejected.get(r, 0) + int(a < g)
            self.rounds[r] = self.rounds.get(r, 0) + 1

    boundary_min, boundary_memory, boundary_ratio = 8, 64, 0.8

    def first_rounds_count(self) -> bool:
        """Whether a request's first round counts in its own estimate: where, over at least `boundary_min` requests
        that ran later rounds too, the first rounds accepted at least `boundary_ratio` x as often as their later
        ones (per drafted position: accepted / (accepted + rejections)). No prompt boundary, then: the CPU MoE's
        synthetic acceptance, where a request's first round is as good a sample of it as any. Left out, a call at
        B = 1 that opened with a merged round and decoded learnt nothing of its request from it: after that
        round a request of alpha 0.2-0.9 that accepted its draft is expected to accept 0.62 (its Beta posterior
        over the spread), where gamma 1 pays from ~0.55 (a round costs 1.52 decode steps); one that rejected,
        0.46. The comparison pairs each request's first round with its own later ones: requests that accept
        more run more rounds, which would otherwise mark first rounds as worse."""
        fa, fr, la, lr = self.boundary
        if not self.first_evidence or self.boundary_requests < self.boundary_min or fa + fr == 0 or la + lr == 0:
            return False
        return fa / (fa + fr) >= self.boundary_ratio * la / (la + lr)

    def first_round_factor(self, pooled_alpha: float) -> float | None:
        """A first round's acceptance per drafted position over the pool's, at most 1 (None before `boundary_min`
        first rounds): a round merged with the prefill is a first round, and a draft at a prompt's end fails far
        more often than later (stdlib, gamma 6: 0.5 drafts accepted per row against 2.5 later; prompt lookup:
        nothing in 16 rows; `record`), so priced at the pool it would look worth opening with where it commits
        little (merged_opening.py). Where calls open with a plain prefill, first rounds are probes mid-call instead,
        which accept like later rounds: the factor then says nothing of a prompt's end (stdlib B = 4: 0.75)."""
        fa, fr = self.first_pool
        if self.first_count < self.boundary_min or fa + fr == 0:
            return None
        return min(1.0, fa / (fa + fr) / max(pooled_alpha, 1e-9))

    def _counts(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's accepted and rejected counts in its own estimate, and whether it has none (a new request)."""
        with_first = self.first_rounds_count()
        acc, rej, new = [], [], []
        for r in rows:
            a, j = self.accepted.get(r, 0), self.rejected.get(r, 0)
            if with_first and r in self.first:
                a, j = a + self.first[r][0], j + self.first[r][1]
            acc.append(a)
            rej.append(j)
            new.append(r not in self.accepted and not (with_first and r in self.first))
        return np.array(acc, dtype=float), np.array(rej, dtype=float), np.array(new, dtype=bool)

    def ratios(self, rows: list[int], pooled_alpha: float) -> np.ndarray:
        """alpha_r / alpha per row. A request not seen yet: 1, or, given earlier runs' spread, the rows not seen
        yet together take its quantiles (log-odds from the pool) at (k + 0.5) / n, k < n (Hazen's plotting positions:
        n new rows drawn from the n requests of the spread take exactly their ratios. Linear interpolation, numpy's
        default, put the slowest of 16 new rows halfway to the second slowest request: a 32-token stdlib run at
        B = 16 then expected its slowest request to need 25.5 rounds of gamma 1 where it took 28, 28.4 with these
        positions; `benchmarks/adaptive_gamma_diagnose.py --calibrate stdlib:16 --gamma 1`). What the choice
        computes from the rows (the mean tokens per row, the slowest row's and the sum of their steps) does not
        depend on which row gets which, and with the spread a batch of new rows has a slow row before any of its
        rounds shows which one it is: one stdlib run at B = 16 opened with rounds on a predicted 1.19x where every
        fixed gamma lost through its slowest rows (docs/results.md section 15)."""
        k = self.prior_strength
        acc, rej, new = self._counts(rows)
        alpha_r = (acc + k * pooled_alpha) / (acc + rej + k)
        out = alpha_r / max(pooled_alpha, 1e-9)
        if self.spread.size and new.any():
            quantiles = np.quantile(self.spread, (np.arange(new.sum()) + 0.5) / new.sum(), method="hazen")
            out[new] = _ratios_at(quantiles, pooled_alpha)
        return out

    def ratio_variances(self, rows: list[int], pooled_alpha: float) -> np.ndarray:
        """The posterior variance of each row's alpha_r / alpha (`ratios`): its Beta posterior's, a request not seen
        yet the prior's (how far requests may lie from the pool), or 0 where the carried spread places it (its
        quantile already stands for that). What a static batch's end depends on beyond the means: the slowest row's
        estimate after a few rounds can be far from its acceptance."""
        k, alpha = self.prior_strength, max(pooled_alpha, 1e-9)
        acc, rej, new = self._counts(rows)
        a, b = acc + k * alpha, rej + k * (1.0 - alpha)
        out = a * b / ((a + b) ** 2 * (a + b + 1.0)) / alpha ** 2
        if self.spread.size:
            out[new] = 0.0
        return out

    @staticmethod
    def row_tokens_variance(per_position: list[float], ratios: np.ndarray, ratio_var: np.ndarray) -> np.ndarray:
        """[rows, len(per_position) + 1]: the variance of `row_tokens` from each row's ratio's (first order: the
        derivative of sum_i p_i ratio^(i + 1) in the ratio, 0 where a position is capped at 1)."""
        if len(ratios) == 0:
            ratios, ratio_var = np.ones(1), np.zeros(1)
        p = np.asarray(per_position, dtype=float)
        i = np.arange(1, len(p) + 1)
        free = p[None, :] * ratios[:, None] ** i[None, :] < 1.0
        slope = np.cumsum(np.where(free, p[None, :] * i[None, :] * ratios[:, None] ** (i[None, :] - 1), 0.0), axis=1)
        return np.concatenate([np.zeros((len(ratios), 1)), slope ** 2 * ratio_var[:, None]], axis=1)

    @staticmethod
    def row_tokens(per_position: list[float], ratios: np.ndarray) -> np.ndarray:
        """[rows, len(per_position) + 1]: the tokens a round of each draft length 0.. commits in each row, the bonus
        token included (column 0, plain decoding: 1)."""
        if len(ratios) == 0:
            ratios = np.ones(1)
        p = np.asarray(per_position, dtype=float)
        i = np.arange(1, len(p) + 1)
        rows = np.minimum(1.0, p[None, :] * ratios[:, None] ** i[None, :])  # [rows, positions]
        return np.concatenate([np.ones((len(ratios), 1)), 1.0 + np.cumsum(rows, axis=1)], axis=1)


def _mean_over_requests(centre: float, behind: float, own: float, new: float) -> float:
    """A centre that stood for `behind` requests, with `new` requests whose estimate is `own` added."""
    return (behind * centre + new * own) / (behind + new) if new else centre


def _logit(p):
    p = np.clip(p, 1e-6, 1.0 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _ratios_at(offsets, pooled_alpha: float):
    """alpha_r / alpha of requests `offsets` log-odds from a pool of `pooled_alpha`."""
    return 1.0 / (1.0 + np.exp(-(_logit(pooled_alpha) + offsets))) / max(pooled_alpha, 1e-9)
