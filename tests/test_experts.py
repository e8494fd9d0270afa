"""Eq. 8-10 against the numbers in docs/notes/moesd.md, plus the beyond-the-paper variants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesd.errors import MoesdError
from moesd.perf.experts import (RoutingCurve, expected_active_experts, expected_max_active_per_rank,
                                saturation_tokens, tokens_per_active_expert)

# docs/notes/moesd.md section 3, "Worked numbers" (tau = 0.95): (E, K) -> T_thres, N(1), N(4), N(8), N(16), N(32)
WORKED = {
    (64, 8): (23, [8, 26.5, 42.0, 56.4, 63.1]),
    (8, 2): (11, [2, 5.5, 7.2, 7.9, 8.0]),
    (62, 6): (30, [6, 20.7, 34.5, 49.8, 59.6]),
    (60, 4): (44, [4, 14.5, 25.5, 40.1, 53.4]),
}


@pytest.mark.parametrize("ek", list(WORKED))
def test_worked_numbers(ek):
    threshold, table = WORKED[ek]
    assert saturation_tokens(*ek, tau=0.95) == threshold
    n = expected_active_experts([1, 4, 8, 16, 32], *ek)
    np.testing.assert_allclose(np.round(n, 1), table, atol=1e-9)


def test_paper_thresholds_from_issue():
    assert saturation_tokens(64, 8) == 23
    assert saturation_tokens(8, 2) == 11


def test_k_sweep_thresholds_and_tokens_per_expert():
    # docs/notes/moesd.md: E = 64, K in 1, 2, 4, 6, 8
    ks = [1, 2, 4, 6, 8]
    assert [saturation_tokens(64, k) for k in ks] == [191, 95, 47, 31, 23]
    per_expert = [tokens_per_active_expert(128, k, expected_active_experts(128, 64, k)) for k in ks]
    np.testing.assert_allclose(np.round(per_expert, 1), [2.3, 4.1, 8.0, 12.0, 16.0])


def test_eq8_matches_monte_carlo_top_k_without_replacement():
    rng = np.random.default_rng(0)
    e, k, t, trials = 64, 8, 5, 20000
    scores = rng.random((trials, t, e))
    chosen = np.argsort(scores, axis=-1)[..., :k]  # uniform top-K, distinct per token
    hit = np.zeros((trials, e), dtype=bool)
    np.put_along_axis(hit, chosen.reshape(trials, t * k), True, axis=1)
    measured = hit.sum(axis=1).mean()
    assert measured == pytest.approx(float(expected_active_experts(t, e, k)), abs=0.1)


@settings(max_examples=60, deadline=None)
@given(t=st.integers(2, 400), e=st.integers(4, 256), data=st.data())
def test_tokens_per_expert_grows_with_rho(t, e, data):
    """App. B: for fixed T > 1, tokens per active expert rho*T / (1 - (1-rho)^T) increases with rho = K/E,
    computed through the library's own Eq. 8 and Eq. 9."""
    k_lo = data.draw(st.integers(1, e - 1))
    k_hi = data.draw(st.integers(k_lo + 1, e))

    def per_expert(k):
        return float(tokens_per_active_expert(t, k, expected_active_experts(t, e, k)))

    assert per_expert(k_hi) > per_expert(k_lo)
    # and it equals App. B's closed form
    rho = k_lo / e
    assert per_expert(k_lo) == pytest.approx(rho * t / (1 - (1 - rho) ** t), rel=1e-9)


def test_dense_limit():
    assert expected_active_experts(17, 1, 1) == 1
    assert saturation_tokens(4, 4) == 1


def test_bad_threshold_inputs():
    with pytest.raises(MoesdError):
        saturation_tokens(8, 9)
    with pytest.raises(MoesdError):
        saturation_tokens(8, 2, tau=1.0)


def test_expert_parallel_max_rank():
    t = np.array([1, 2, 5, 40])
    np.testing.assert_allclose(expected_max_active_per_rank(t, 64, 8, 1), expected_active_experts(t, 64, 8))
    mx = expected_max_active_per_rank(t, 64, 8, 4)
    mean = expected_active_experts(t, 64, 8) / 4
    assert np.all(mx >= mean) and np.all(mx <= 16)
    # Monte Carlo under Eq. 7's independence for t = 2 tokens and 4 ranks.
    rng = np.random.default_rng(1)
    p = 1 - (1 - 8 / 64) ** 2
    counts = rng.binomial(16, p, size=(200000, 4)).max(axis=1).mean()
    assert mx[1] == pytest.approx(counts, abs=0.02)
    with pytest.raises(MoesdError):
        expected_max_active_per_rank(t, 60, 8, 7)


def _correlated_curve():
    # Distinct experts of a model whose neighbouring tokens share experts (docs/notes/offline.md section 6:
    # 12.8 at t = 5 against 31.2 from Eq. 8 for E = 128, K = 8).
    return RoutingCurve(128, 8, tokens=(1, 5, 20), distinct_experts=(8, 12.8, 30.0))


def test_routing_curve_reproduces_its_points_and_stays_bounded():
    curve = _correlated_curve()
    np.testing.assert_allclose(curve.active_experts([1, 5, 20], 128, 8), [8, 12.8, 30.0], rtol=1e-9)
    t = np.array([1, 2, 3, 5, 10, 20, 100, 10000])
    d = curve.active_experts(t, 128, 8)
    assert np.all(np.diff(d) >= 0) and np.all(d <= 128)
    assert np.all(d <= expected_active_experts(t, 128, 8) + 1e-9)
    # Transfers to another K (the sparsity sweep) through the effective-token ratio.
    assert curve.active_experts(1, 128, 2) == pytest.approx(2)
    assert curve.active_experts(5, 128, 2) < expected_active_experts(5, 128, 2)


def test_routing_curve_rejects_bad_points(tmp_path):
    with pytest.raises(MoesdError):
        RoutingCurve(8, 2, tokens=(1, 2), distinct_experts=(2, 9))
    with pytest.raises(MoesdError):
        RoutingCurve(8, 2, tokens=(1, float("nan")), distinct_experts=(2, 3))
    bad = tmp_path / "curve.json"
    bad.write_text('{"num_experts": 8}')
    with pytest.raises(MoesdError, match="malformed routing curve"):
        RoutingCurve.from_file(bad)
