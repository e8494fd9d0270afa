"""Speed of the performance model: fit on 21 points (paper App. C: 0.114 s) and predict 100 x 8.

Goals (issue "MoESD performance model"): fit of 21 points <= 0.1 s; predict over 100 batch sizes x
8 gammas <= 100 ms. Prints medians over repeats after a warm-up; run with `make bench`.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from moesd.bench.timing import sample_seconds
from moesd.perf.fit import fit, stride_split
from moesd.perf.hardware import hardware_preset
from moesd.perf.measurements import Measurements
from moesd.perf.model_presets import model_preset
from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.prior import physical_prior
from moesd.perf.step_time import StepContext
from moesd.perf.synthetic import simulate

REPEATS = 21


def timed(fn, repeats=REPEATS):
    samples = sample_seconds(fn, repeats)  # the warm-up call pays lazy imports
    return statistics.median(samples), min(samples), max(samples)


def paper_grid_measurements(seed=0) -> Measurements:
    """228 synthetic points on the paper's sparsity-study grid (6 K x 2 gamma x 19 B), 5 % noise."""
    hw = hardware_preset("H800")
    target, draft = model_preset("Qwen2-57B-A14B-Instruct").arch(), model_preset("Qwen2-0.5B-Instruct").arch()
    ctx = StepContext(hw.ridge_point_flops_per_byte, 2.0, verify_convention="paper")
    return simulate(physical_prior(target, hw, 2, draft), ctx, 64, (1, 2, 4, 6, 7, 8), (2, 4), seed=seed,
                    with_stages=False)


def main() -> int:
    hw = hardware_preset("H800")
    target, draft = model_preset("Qwen2-57B-A14B-Instruct").arch(), model_preset("Qwen2-0.5B-Instruct").arch()
    ctx = StepContext(hw.ridge_point_flops_per_byte, 2.0, verify_convention="paper")
    m = paper_grid_measurements()
    chosen, _ = stride_split(m, 11)
    subset = m.subset(chosen)
    fit_med, fit_min, fit_max = timed(lambda: fit(subset, hw, ctx, 2, target, draft))
    scenario = Scenario.from_prior(target, hw, 2, draft)
    pred_med, pred_min, pred_max = timed(lambda: predict(scenario, range(1, 101), range(1, 9), Acceptance(alpha=0.8)))
    cli_samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "moesd.cli", "predict", "--target", "Qwen2-57B-A14B-Instruct",
                        "--draft", "Qwen2-0.5B-Instruct", "--hardware", "H800", "--tp", "2", "--alpha", "0.8",
                        "--batch-sizes", "1-100", "--gamma", "1-8", "--json"], check=True, capture_output=True)
        cli_samples.append(time.perf_counter() - t0)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"fit, {len(subset)} points (paper stride 11 of 228), 10 free params: median {1e3 * fit_med:.1f} ms "
          f"(min {1e3 * fit_min:.1f}, max {1e3 * fit_max:.1f}; goal <= 100 ms, paper 114 ms)")
    print(f"predict, 100 batch sizes x 8 gammas: median {1e3 * pred_med:.2f} ms "
          f"(min {1e3 * pred_min:.2f}, max {1e3 * pred_max:.2f}; goal <= 100 ms)")
    print(f"`moesd predict` end to end (process start, imports, 800 rows JSON): median "
          f"{1e3 * statistics.median(cli_samples):.0f} ms over {len(cli_samples)} runs")
    ok = fit_med <= 0.1 and pred_med <= 0.1
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
