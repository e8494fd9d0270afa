"""engine/round_tokens.py: the tokens a round of each draft length is expected to commit per row."""

import numpy as np
import pytest

from moesd.engine.round_tokens import RoundTokens


def test_a_round_commits_one_plus_the_chance_of_each_prefix_and_the_prices_follow_outcomes():
    tokens = RoundTokens(4)
    for _ in range(40):  # every row accepts 3 of 4 drafted tokens: alpha near 3 / 4 at the first positions
        tokens.record_round([3, 3], [4, 4], [0, 1])
    p = tokens.acceptance.per_position(4)
    assert tokens.per_row(4, None)[1] == pytest.approx([1.0 + sum(p[:g]) for g in range(5)])  # the pool's rows
    per_row, mean, variance = tokens.per_row(4, [0, 1])
    assert per_row.shape == (2, 5) and variance is None and mean == pytest.approx(per_row.mean(axis=0))
    assert p[0] > 0.9 and p[3] < 0.1  # the 4th token was never accepted
    assert tokens.per_row(4, [0, 1])[0] is per_row  # kept while no outcome arrives
    tokens.record_round([0, 0], [4, 4], [0, 1])
    assert tokens.per_row(4, [0, 1])[1][1] < mean[1]  # a rejection lowers the price at once


def test_empty_rounds_are_priced_as_decode_steps_in_their_share():
    tokens = RoundTokens(2)
    tokens.record_round([2], [2], [0])
    full = tokens.per_row(2, [0])[0].copy()
    tokens.record_empty()
    empty = tokens.empty_fraction
    assert empty == pytest.approx(1 / 3)  # 1 empty of 2 asked, with one pseudo-round
    assert tokens.per_row(2, [0])[0] == pytest.approx(np.column_stack([full[:, :1], empty + (1 - empty) * full[:, 1:]]))


def test_the_variance_is_computed_only_when_asked_and_a_carry_is_a_prior():
    earlier = RoundTokens(3)
    for _ in range(6):
        earlier.record_round([3, 0], [3, 3], [0, 1])  # two kinds of request
    later = RoundTokens(3)
    carried = later.carry(earlier, 8.0)
    assert carried["alpha"] == pytest.approx(earlier.acceptance.alpha, abs=0.05)
    assert carried["request_spread"][0] < 1.0 < carried["request_spread"][2]
    assert later.acceptance.offered == [0, 0, 0]  # a prior, not the earlier counts
    assert later.per_row(3, [0, 1])[2] is None
    variance = later.per_row(3, [0, 1], variance=True)[2]
    assert variance.shape == (2, 4) and (variance >= 0).all() and variance[:, 0] == pytest.approx([0.0, 0.0])


def test_the_carried_acceptance_can_be_a_mean_over_requests_not_the_last_runs():
    """With `requests` (AdaptiveGamma's `carry_over_requests`), runs of one request each, alternately accepting nearly
    everything and nearly nothing: the next run's prior is centred near the requests' mean, not on whichever request
    came last; a run without a round hands it on; and a run of 16 requests counts 16 times one of one."""
    from moesd.engine.acceptance_posterior import PositionAcceptance

    earlier = None
    centres = []
    for run in range(12):
        acc = PositionAcceptance(2)
        if earlier is not None:
            acc.carry(earlier, 8.0, requests=1)
        a0, b0 = acc.pooled_prior
        centres.append(a0 / (a0 + b0))
        good = run % 2 == 0
        acc.record([2 if good else 0] * 20, [2] * 20)  # 20 rounds of one request
        earlier = acc
    assert all(0.3 < c < 0.75 for c in centres[4:])  # the last request alone: ~0.95 or ~0.05
    last = PositionAcceptance(2)
    last.carry(earlier, 8.0)  # the default: centred on the last run's estimate
    assert last.pooled_prior[0] / sum(last.pooled_prior) < 0.25  # the last request, which accepted nothing
    idle = PositionAcceptance(2)
    idle.carry(earlier, 8.0, requests=1)
    after = PositionAcceptance(2)
    after.carry(idle, 8.0, requests=1)
    assert after.pooled_prior == pytest.approx(idle.pooled_prior) and after.position_prior == idle.position_prior
    # 16 requests of a low-accepting run outweigh the one request behind a high prior.
    high, low = PositionAcceptance(2), PositionAcceptance(2)
    high.record([2] * 20, [2] * 20)
    low.carry(high, 8.0, requests=1)
    low.record([0] * 40, [2] * 40)
    many, one = PositionAcceptance(2), PositionAcceptance(2)
    many.carry(low, 8.0, requests=16)
    one.carry(low, 8.0, requests=1)
    centre = [p[0] / (p[0] + p[1]) for p in (many.pooled_prior, one.pooled_prior)]
    assert centre[0] < 0.1 < 0.4 < centre[1]
