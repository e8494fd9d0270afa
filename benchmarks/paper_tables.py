"""The physical prior beside MoESD Tables 1-2 (Qwen2-57B-A14B-Instruct + Qwen2-0.5B, HumanEval, T = 0).

For each device row and gamma we feed the paper's measured sigma, take the peak predicted speedup
over the paper's batch grid, and print it beside the paper's peak. Absolute values are expected to
be too high (the prior has no kernel/framework overheads); the question is whether the orderings the
paper reports hold: H800 > A800, L40 > A800 (higher ridge point), 2xA800 > 4xA800 (draft on one GPU).
"""

from __future__ import annotations

from moesd.perf.hardware import hardware_preset
from moesd.perf.model_presets import model_preset
from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.summary import summarize
from moesd.perf.synthetic import PAPER_BATCH_SIZES

# (device, tp) -> {gamma: (sigma, paper peak speedup)}; docs/notes/moesd.md section 8, HumanEval, temp 0.0
PAPER_ROWS = {
    ("A800-80GB", 2): {2: (0.94, 1.63), 3: (0.93, 1.96), 4: (0.91, 2.18)},
    ("H800", 2): {2: (0.95, 1.71), 3: (0.93, 2.01), 4: (0.90, 2.29)},
    ("A800-80GB", 4): {2: (0.95, 1.65), 3: (0.93, 1.90), 4: (0.90, 2.08)},
    ("L40", 4): {2: (0.95, 1.79), 3: (0.93, 2.14), 4: (0.90, 2.25)},
}


def main() -> None:
    target = model_preset("Qwen2-57B-A14B-Instruct").arch()
    draft = model_preset("Qwen2-0.5B-Instruct").arch()
    print("| device | gamma | sigma | paper peak | prior peak (B), paper verify Bγ | prior peak (B), engine B(γ+1) | prior / paper |")
    print("|---|---|---|---|---|---|---|")
    for (device, tp), cells in PAPER_ROWS.items():
        for gamma, (sigma, paper) in cells.items():
            peaks = []
            for convention in ("paper", "engine"):
                sc = Scenario.from_prior(target, hardware_preset(device), tp, draft, verify_convention=convention)
                s = summarize(predict(sc, PAPER_BATCH_SIZES, [gamma], Acceptance(sigma=sigma)))
                peaks.append((s["peak_speedup"], s["peak_batch_size"]))
            print(f"| {tp}x{device} | {gamma} | {sigma:.2f} | {paper:.2f} | {peaks[0][0]:.2f} ({peaks[0][1]}) | "
                  f"{peaks[1][0]:.2f} ({peaks[1][1]}) | {peaks[0][0] / paper:.2f} |")


if __name__ == "__main__":
    main()
