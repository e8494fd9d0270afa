"""A static batch's finish objective (engine/finish_objective.py) against simulated batches: the spread of each row's
steps to its end, which the expected-progress ends leave out."""

import numpy as np
import pytest

from moesd.engine.acceptance_posterior import RequestAcceptance
from moesd.engine.finish_objective import expected_ends, finish_rates, tokens_variance
from moesd.errors import MoesdError


def test_tokens_variance_is_the_variance_of_the_tokens_a_round_commits():
    """Enumerated: a round of draft length g commits 1 + k tokens with probability P(first k accepted) - P(first
    k + 1 accepted) (the last, k = g, with P(all g accepted))."""
    survive = np.array([[0.9, 0.7, 0.4, 0.1], [0.5, 0.25, 0.125, 0.0625]])  # P(first i + 1 accepted), per row
    per_row = np.concatenate([np.ones((2, 1)), 1.0 + np.cumsum(survive, axis=1)], axis=1)
    variance = tokens_variance(per_row)
    for r in range(2):
        for g in range(5):
            p = np.concatenate([[1.0], survive[r, :g]])
            probs = np.append(p[:-1] - p[1:], p[-1])  # k = 0..g accepted
            k = np.arange(g + 1)
            mean = (probs * k).sum()
            assert variance[r, g] == pytest.approx((probs * k ** 2).sum() - mean ** 2, abs=1e-12)


def simulated_finish_s(alphas, remaining, gamma, cost, runs, seed=0):
    """The mean time of a static batch holding draft length `gamma` until its last row ends, each row accepting each
    draft with its own alpha (independently; a rejection ends the round), a step of b rows costing cost(b):
    discrete steps, each row taking no more than it has left."""
    rng = np.random.default_rng(seed)
    left = np.tile(np.asarray(remaining, float), (runs, 1))
    total = np.zeros(runs)
    while (left > 0).any():
        active = left > 0
        accepted = np.zeros(left.shape)
        alive = np.ones(left.shape, dtype=bool)
        for _ in range(gamma):
            alive &= rng.random(left.shape) < alphas
            accepted += alive
        total += np.where(active.any(axis=1), cost(active.sum(axis=1)), 0.0)
        left = np.where(active, left - np.minimum(1 + accepted, left), 0.0)
    return float(total.mean())


@pytest.mark.parametrize("gamma", [1, 3])
def test_finish_objective_expects_the_last_row_to_end_when_simulated_batches_do(gamma):
    """64 rows accepting 0.2-0.9, 32 tokens each, steps costing 1 + 0.005 b (mostly per step, as a MoE's or a
    GPU's): the time the objective predicts holding gamma is within 3 % of simulated batches' mean with the spread of
    the rows' ends (32 draws), where the ends of the rows' expected progress predict the batch over 4 % sooner (the
    slowest rows' chance of falling behind makes the last one end later than any expected end). Decoding has no
    spread: both predict it exactly."""
    n = 64
    alphas = np.linspace(0.2, 0.9, n)
    survive = alphas[:, None] ** np.arange(1, gamma + 1)[None, :]
    per_row = np.concatenate([np.ones((n, 1)), 1.0 + np.cumsum(survive, axis=1)], axis=1)
    remaining = np.full(n, 32.0)
    by_batch_s = np.repeat((1.0 + 0.005 * np.arange(1, n + 1))[:, None], gamma + 1, axis=1)
    simulated = simulated_finish_s(alphas, remaining, gamma, lambda b: 1.0 + 0.005 * b, runs=400)
    spread = remaining.sum() / finish_rates(per_row, remaining, by_batch_s, plans=False, draws=32)
    expected = remaining.sum() / finish_rates(per_row, remaining, by_batch_s, plans=False)
    assert spread[gamma] == pytest.approx(simulated, rel=0.03)
    assert expected[gamma] < 0.96 * simulated
    decode_s = 32 * (1.0 + 0.005 * n)
    assert spread[0] == pytest.approx(decode_s, rel=1e-9) and expected[0] == pytest.approx(decode_s, rel=1e-9)


def test_expected_ends_keep_each_rows_rank_and_a_lone_row_its_mean():
    """Each row takes the expected order statistic of its rank by mean; one row, or rows without spread, keep their
    means; the draws are the same at every call (the decision depends on the run's history only)."""
    steps = np.array([[10.0, 5.0], [20.0, 8.0], [15.0, 30.0]])
    sd = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 1.0]])
    ends = expected_ends(steps, sd, 32)
    assert np.array_equal(ends[:, 0], steps[:, 0])
    assert list(np.argsort(ends[:, 1])) == list(np.argsort(steps[:, 1]))
    assert np.array_equal(ends, expected_ends(steps, sd, 32))
    assert expected_ends(steps[:1], sd[:1], 32)[0, 1] == pytest.approx(5.0, abs=0.5)


def test_finish_objective_counts_the_uncertainty_of_each_rows_acceptance():
    """16 rows whose acceptance is known only from a few rounds each (Beta posteriors from RequestAcceptance, around a
    pool of 0.55), gamma 2: simulated batches drawing each row's alpha from its posterior end within 4 % of what the
    objective predicts with the estimates' variance, where the rounds' chance alone predicts them over 4 % sooner."""
    requests = RequestAcceptance()
    requests.first_evidence = False  # as at a prompt boundary (these first rounds accept like the later ones)
    rng = np.random.default_rng(3)
    truth = np.linspace(0.25, 0.85, 16)
    for _ in range(4):  # the first round of each request is left out of its own estimate
        accepted = [int(np.argmin(np.append(rng.random(2) < a, False).cumprod())) for a in truth]
        requests.record(list(range(16)), accepted, [2] * 16)
    pool, rows = 0.55, list(range(16))
    survive = [pool, pool ** 2]
    ratios, ratio_var = requests.ratios(rows, pool), requests.ratio_variances(rows, pool)
    per_row = RequestAcceptance.row_tokens(survive, ratios)
    per_row_var = RequestAcceptance.row_tokens_variance(survive, ratios, ratio_var)
    # First order against draws of the ratio from its posterior
    k = requests.prior_strength
    a = np.array([requests.accepted[r] for r in rows]) + k * pool
    b = np.array([requests.rejected[r] for r in rows]) + k * (1 - pool)
    draws = rng.beta(a[:, None], b[:, None], size=(16, 4000)) / pool
    drawn = np.stack([RequestAcceptance.row_tokens(survive, draws[:, j]) for j in range(4000)])
    assert np.allclose(per_row_var[:, 2], drawn[:, :, 2].var(axis=0), rtol=0.2)
    remaining = np.full(16, 40.0)
    cost = lambda b: 1.0 + 0.01 * b  # noqa: E731
    by_batch_s = np.repeat(cost(np.arange(1, 17))[:, None], 3, axis=1)
    alphas = np.minimum(draws[:, :400] * pool, 1.0)
    simulated = np.mean([simulated_finish_s(alphas[:, j], remaining, 2, cost, runs=1, seed=j) for j in range(400)])
    with_estimates = remaining.sum() / finish_rates(per_row, remaining, by_batch_s, plans=False, draws=32,
                                                    per_row_var=per_row_var)
    chance_only = remaining.sum() / finish_rates(per_row, remaining, by_batch_s, plans=False, draws=32)
    assert with_estimates[2] == pytest.approx(simulated, rel=0.04)
    assert chance_only[2] < 0.96 * simulated


def test_policy_passes_the_spread_of_the_ends_to_the_finish_objective_when_asked():
    """AdaptiveGamma(finish_draws=32) prices a static batch's rounds with the spread of the rows' ends (every draft
    length that speculates moves; here up, the fast rows' chance of ending sooner shrinking the batch sooner) and
    decoding as before; 0, the default, is the objective without it."""
    from moesd.engine.adaptive_gamma import AdaptiveGamma
    from test_adaptive_gamma import two_requests_taught

    rates = {}
    for draws in (0, 32):
        policy = two_requests_taught()
        policy.finish_draws = draws
        rates[draws] = policy._rates(4, 100, 0, [0, 1, 0, 1], [30, 30, 12, 20], 0)[0]
    assert rates[32][0] == pytest.approx(rates[0][0], rel=1e-12)
    assert all(abs(r32 / r0 - 1.0) > 1e-3 for r32, r0 in zip(rates[32][1:], rates[0][1:]))
    assert AdaptiveGamma(4, two_requests_taught().cost).finish_draws == 0
    for bad in (-1, 4097, 2.5, True):  # a bool is not a count of draws
        with pytest.raises(MoesdError):
            AdaptiveGamma(4, two_requests_taught().cost, finish_draws=bad)
