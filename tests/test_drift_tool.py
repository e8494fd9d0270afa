"""benchmarks/adaptive_gamma_drift.py: the round / decode relation it measures (fixed-gamma rounds over autoregressive
decode steps at the full batch, the merged first round and other batch sizes left out) and the one auto's cost model
prices, per call and split by whether auto ran rounds."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the script imports the benchmark harness, which builds engines
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import adaptive_gamma_drift  # noqa: E402


class _Cost:
    """auto's cost model: a decode step priced at 12 ms and a gamma 1 round at 18 (1.5x)."""

    def steps_s(self, b, top, catch_up=0):
        assert (b, top, catch_up) == (4, 1, 0)
        return [0.012, 0.018]

    def scales(self):
        return {"speed_index": 2.0}


class _Engine:
    def __init__(self, label: str) -> None:
        self.label = label
        self.gamma_cost_model = _Cost() if label == "auto" else None

    def generate(self, prompts, limits, eos, seed=0):
        if self.label == "ar":  # decode steps of 10 ms at B = 4, faster ones in a tail at B = 2
            steps = [{"kind": "decode", "batch_size": 4, "step_s": 0.010}] * 5 + \
                [{"kind": "decode", "batch_size": 2, "step_s": 0.004}] * 5
        elif self.label == "g1":  # the merged first round (left out), rounds of 16 ms at B = 4, a tail round
            steps = [{"kind": "prefill+verify", "batch_size": 4, "step_s": 0.5}] + \
                [{"kind": "verify", "batch_size": 4, "step_s": 0.016}] * 5 + \
                [{"kind": "verify", "batch_size": 1, "step_s": 0.001}]
        else:
            steps = []
        metrics = {"steps": steps, "stages": {"tokens_per_s": 100.0 if self.label == "ar" else 95.0}}
        if self.label == "auto":
            metrics["adaptive"] = {"gamma_histogram": {"0": 30} if seed % 2 else {"0": 20, "1": 5}}
        return type("Result", (), {"metrics": metrics})()


def test_drift_measures_and_prices_the_relation_per_call(monkeypatch, capsys):
    monkeypatch.setattr(adaptive_gamma_drift, "cell", lambda name, batch, configs, models, options: (
        {label: _Engine(label) for label, _, _ in configs}, ["p"] * batch, None))
    rows = adaptive_gamma_drift.drift("stdlib:4", calls=4, gamma=1, max_gamma=6, options=(), max_new=32)
    assert [r["rounds"] for r in rows] == [True, False, True, False]
    for r in rows:
        assert r["measured"] == pytest.approx(1.6)  # 16 ms / 10 ms: the tail and the merged round left out
        assert r["priced"] == pytest.approx(1.5) and r["priced_decode"] == pytest.approx(1.2)
        assert r["auto_vs_ar"] == pytest.approx(0.95) and r["speed_index"] == 2.0
    out = capsys.readouterr().out
    assert "2 of 4 calls where auto ran rounds: round / decode step measured 1.60, priced 1.50" in out
    assert "2 of 4 calls where auto only decoded" in out
