"""benchmarks/adaptive_gamma_confirm.py's interval of a median (the sign test's, from order statistics) and its
verdicts: the coverage it states against the binomial formula and against a simulation on a skewed distribution."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the script imports the benchmark harness, which builds engines
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from adaptive_gamma_confirm import median_interval, verdict  # noqa: E402


def test_interval_picks_the_order_statistics_the_binomial_gives():
    low, high, coverage = median_interval([float(x) for x in range(1, 21)])  # n = 20: x_(6), x_(15)
    assert (low, high) == (6.0, 15.0) and coverage == pytest.approx(0.9586, abs=1e-4)
    low, high, coverage = median_interval([float(x) for x in range(1, 25)])  # n = 24: x_(7), x_(18)
    assert (low, high) == (7.0, 18.0) and coverage == pytest.approx(0.9773, abs=1e-4)
    low, high, coverage = median_interval([3.0, 1.0, 2.0])  # too few for 95 %: the range, 75 %
    assert (low, high) == (1.0, 3.0) and coverage == pytest.approx(0.75)


def test_interval_covers_a_skewed_distributions_median_as_often_as_it_states():
    rng = np.random.default_rng(0)
    true_median = np.exp(0.0)  # lognormal(0, 0.3): median 1, skewed to the right
    hits, stated = 0, None
    for _ in range(3000):
        low, high, stated = median_interval(rng.lognormal(0.0, 0.3, 20).tolist())
        hits += low <= true_median <= high
    assert abs(hits / 3000 - stated) < 0.02  # 0.9586 stated; the simulation's standard error is ~0.004


def test_verdicts_against_a_threshold():
    assert verdict(0.98, 1.02, 0.97, strict=False) == "met"
    assert verdict(0.97, 1.02, 0.97, strict=False) == "met"
    assert verdict(1.0, 1.02, 1.0, strict=True) == "undecided"
    assert verdict(0.90, 0.96, 0.97, strict=False) == "missed"
    assert verdict(0.95, 0.99, 0.97, strict=False) == "undecided"
