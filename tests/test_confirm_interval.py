"""benchmarks/adaptive_gamma_confirm.py's interval of a median (the sign test's, from order statistics) and its
verdicts: the coverage it states against the binomial formula and against a simulation on a skewed distribution."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the script imports the benchmark harness, which builds engines
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import adaptive_gamma_confirm  # noqa: E402
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


class _FakeEngine:
    """Stands for one configuration's engine: auto reads 0.95x autoregressive decoding, probing once per call."""

    def __init__(self, auto: bool) -> None:
        self.auto = auto

    def generate(self, prompts, limits, eos, seed=0):
        metrics = {"stages": {"tokens_per_s": (95.0 if self.auto else 100.0) + seed % 3}}
        if self.auto:
            metrics["adaptive"] = {"gamma_histogram": {"0": 30, "1": 1}, "probes_deferred": seed % 2,
                                   "trace": [{"probe": True}] + [{"probe": False}] * 30}
        return type("Result", (), {"metrics": metrics})()


def test_a_confirm_records_each_pass_and_its_report_reads_the_probes(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(adaptive_gamma_confirm, "cell", lambda name, batch, configs, models: (
        {label: _FakeEngine(auto) for label, _, auto in configs}, ["p"], None))
    rec = {"setting": "moe", "batch_size": 4, "mixed_lengths": False, "gammas": [1, 2], "max_new_tokens": 32,
           "commit": "abc"}
    out = adaptive_gamma_confirm.confirm(rec, [("ar", "ar")], passes=6, models=None)
    assert out["passes"] == 6 and out["auto_probes_deferred"] == [[1, k % 2] for k in range(6)]
    (goal,) = out["goals"]
    assert goal["median"] == pytest.approx(0.95, abs=0.02) and goal["verdict"] == "missed"
    path = tmp_path / "confirm.jsonl"
    path.write_text(__import__("json").dumps(out) + "\n")
    adaptive_gamma_confirm.report(str(path))
    assert "auto's probes 6 in 6 passes, deferred by the budget 3 times, in 0 passes that ran none" in \
        capsys.readouterr().out
