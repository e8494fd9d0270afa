"""Can the fit recover known parameters? Synthetic data from the model on the paper's grid, 5 % noise.

(a) all 228 points (6 K x 2 gamma x 19 B) with per-stage times;
(b) the paper's protocol: speedup only, fit on every 11th point (21), error on the other 207.
Prints true vs fitted parameters and speedup errors; numbers go to docs/results.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from moesd.perf.fit import fit, held_out_error, predicted_speedup, stride_split
from moesd.perf.hardware import hardware_preset
from moesd.perf.model_presets import model_preset
from moesd.perf.prior import physical_prior
from moesd.perf.step_time import StepContext, StepTimeParams
from moesd.perf.synthetic import simulate


def main() -> None:
    hw = hardware_preset("H800")
    target, draft = model_preset("Qwen2-57B-A14B-Instruct").arch(), model_preset("Qwen2-0.5B-Instruct").arch()
    ctx = StepContext(hw.ridge_point_flops_per_byte, 2.0)
    prior = physical_prior(target, hw, 2, draft)
    truth = dataclasses.replace(prior, bias_s=2 * prior.bias_s, k1_s=3 * prior.k1_s, k2_s=1.5 * prior.k2_s,
                                draft_bias_s=3 * prior.draft_bias_s, draft_k_s=2 * prior.draft_k_s,
                                reject_bias_s=2e-4, reject_k_s=5e-6, lam=0.6, s=1.024)
    grid = dict(num_experts=64, top_ks=(1, 2, 4, 6, 7, 8), gammas=(2, 4))
    clean = simulate(truth, ctx, noise=0.0, **grid)

    full = simulate(truth, ctx, seed=0, **grid)
    a = fit(full, hw, ctx, 2, target, draft)
    print(f"(a) 228 points with stage times, 5 % noise: {1e3 * a.elapsed_s:.1f} ms, converged={a.converged}")
    print("| parameter | true | fitted | fitted / true |")
    print("|---|---|---|---|")
    for name in StepTimeParams.names():
        t, f = getattr(truth, name), getattr(a.params, name)
        print(f"| {name} | {t:.4g} | {f:.4g} | {f / t:.3f} |")
    err = np.abs(predicted_speedup(a.params, ctx, clean)[0] / clean.speedup - 1) * 100
    print(f"speedup error vs noise-free truth: median {np.median(err):.2f} %, max {err.max():.2f} %")
    ho = held_out_error(full, hw, ctx, 2, target, draft)
    print(f"leave-batch-size-out ({ho['folds']} folds) vs noisy data: median {ho['median_abs_pct_error']:.2f} %, "
          f"max {ho['max_abs_pct_error']:.2f} %")

    paper = simulate(truth, ctx, seed=1, with_stages=False, **grid)
    chosen, rest = stride_split(paper, 11)
    b = fit(paper.subset(chosen), hw, ctx, 2, target, draft)
    noisy = np.abs(predicted_speedup(b.params, ctx, paper.subset(rest))[0] / paper.speedup[rest] - 1) * 100
    exact = np.abs(predicted_speedup(b.params, ctx, clean.subset(rest))[0] / clean.speedup[rest] - 1) * 100
    floor = np.abs(predicted_speedup(truth, ctx, paper.subset(rest))[0] / paper.speedup[rest] - 1) * 100
    print(f"(b) paper protocol, speedup only, fit {len(chosen)} points in {1e3 * b.elapsed_s:.1f} ms:")
    print(f"    error on the other {len(rest)} noisy points: median {np.median(noisy):.2f} %, max {noisy.max():.2f} % "
          f"(the true parameters score median {np.median(floor):.2f} %, max {floor.max():.2f} %: the noise floor)")
    print(f"    error vs noise-free truth: median {np.median(exact):.2f} %, max {exact.max():.2f} %")


if __name__ == "__main__":
    main()
