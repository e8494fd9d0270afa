"""Eq. 11 (G) and Eq. 5 (sigma from alpha)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesd.errors import MoesdError
from moesd.perf.acceptance import alpha_from_sigma, mean_acceptance_length, sigma_from_alpha
from moesd.perf.roofline import growth, growth_normalized, knee_tokens, to_paper_coefficient


def test_g_matches_eq11_and_is_c1_at_knee():
    knee, s = 20.0, 1.3
    assert growth(5, knee, s) == pytest.approx(s**5)
    assert growth(30, knee, s) == pytest.approx(s**knee * (1 + math.log(s) * 10))
    h = 1e-6
    left = (growth(knee, knee, s) - growth(knee - h, knee, s)) / h
    right = (growth(knee + h, knee, s) - growth(knee, knee, s)) / h
    assert left == pytest.approx(right, rel=1e-4)
    assert left == pytest.approx(math.log(s) * s**knee, rel=1e-4)


def test_normalized_form_does_not_overflow_for_gpu_ridge_points():
    knee = knee_tokens(1.0, 989.5e12 / 3.35e12, 2.0)  # H800, bf16: ~295 tokens
    g = growth_normalized([1, knee, 10 * knee], knee, 2.0)
    assert np.all(np.isfinite(g)) and g[1] == 1.0
    assert to_paper_coefficient(1.0, knee, 2.0) == pytest.approx(2.0**-knee, rel=1e-9)


def test_knee_scales_with_bytes_per_param():
    assert knee_tokens(0.5, 300, 2) == 150
    assert knee_tokens(0.5, 300, 1) == 75  # fp8 weights: twice the FLOPs per byte


def test_sigma_worked_numbers():
    # docs/notes/moesd.md Eq. 5, derived values
    np.testing.assert_allclose(np.round(sigma_from_alpha(0.8, np.array([2, 3, 4])), 3), [0.813, 0.738, 0.672])
    np.testing.assert_allclose(np.round(sigma_from_alpha(0.9, np.array([2, 3, 4])), 3), [0.903, 0.860, 0.819])


def test_acceptance_limits():
    assert sigma_from_alpha(0.0, 4) == pytest.approx(1 / 5)  # only the bonus token
    assert sigma_from_alpha(1 - 1e-12, 4) == pytest.approx(1.0)
    assert mean_acceptance_length(1.0, 4) == 5.0
    assert mean_acceptance_length(0.0, 3) == 1.0


@settings(max_examples=50, deadline=None)
@given(alpha=st.floats(0.0, 0.999), gamma=st.integers(1, 10))
def test_alpha_sigma_round_trip(alpha, gamma):
    sigma = float(sigma_from_alpha(alpha, gamma))
    assert float(mean_acceptance_length(alpha, gamma)) == pytest.approx(sigma * (gamma + 1))
    if alpha > 1e-3:
        assert alpha_from_sigma(sigma, gamma) == pytest.approx(alpha, abs=1e-6)


def test_sigma_out_of_range():
    with pytest.raises(MoesdError):
        alpha_from_sigma(1.2, 3)
