"""MoESD's published peak speedups (Tables 1-2, docs/notes/moesd.md section 8), for validation.

Each cell: the paper's sigma and its peak speedup x over the batch sizes tried, for one (model, device,
dataset, temperature, gamma). The paper does not state its TP degree: we read "2xA800" as TP 2 for the target
with the draft on one device, as it describes.
"""

from __future__ import annotations

from dataclasses import dataclass

QWEN2 = ("Qwen2-57B-A14B-Instruct", "Qwen2-0.5B-Instruct", "model")
MIXTRAL = ("Mixtral-8x7B-Instruct-v0.1", None, "eagle")


@dataclass(frozen=True)
class PaperCell:
    table: int
    target: str
    draft: str | None
    draft_kind: str
    device: str
    tp: int
    dataset: str
    temperature: float
    gamma: int
    sigma: float
    speedup: float


# (table, model, device, tp, dataset, temperature) -> ((sigma, x) at gamma 2, 3, 4)
_ROWS = {
    (1, QWEN2, "A800-80GB", 2, "humaneval", 0.0): ((0.94, 1.63), (0.93, 1.96), (0.91, 2.18)),
    (1, QWEN2, "A800-80GB", 2, "humaneval", 1.0): ((0.83, 1.48), (0.73, 1.50), (0.67, 1.72)),
    (1, QWEN2, "A800-80GB", 2, "mtbench", 0.0): ((0.71, 1.25), (0.62, 1.29), (0.55, 1.19)),
    (1, QWEN2, "A800-80GB", 2, "mtbench", 1.0): ((0.68, 1.22), (0.57, 1.29), (0.48, 1.20)),
    (1, MIXTRAL, "A800-80GB", 2, "humaneval", 0.0): ((0.78, 1.67), (0.66, 1.69), (0.58, 1.79)),
    (1, MIXTRAL, "A800-80GB", 2, "humaneval", 1.0): ((0.61, 1.38), (0.46, 1.33), (0.39, 1.32)),
    (1, MIXTRAL, "A800-80GB", 2, "mtbench", 0.0): ((0.61, 1.34), (0.46, 1.32), (0.39, 1.26)),
    (1, MIXTRAL, "A800-80GB", 2, "mtbench", 1.0): ((0.53, 1.21), (0.43, 1.20), (0.35, 1.18)),
    (2, QWEN2, "H800", 2, "humaneval", 0.0): ((0.95, 1.71), (0.93, 2.01), (0.90, 2.29)),
    (2, QWEN2, "H800", 2, "humaneval", 1.0): ((0.82, 1.36), (0.74, 1.47), (0.75, 1.84)),
    (2, QWEN2, "H800", 2, "mtbench", 0.0): ((0.71, 1.46), (0.62, 1.45), (0.54, 1.43)),
    (2, QWEN2, "H800", 2, "mtbench", 1.0): ((0.67, 1.27), (0.56, 1.22), (0.48, 1.18)),
    (2, QWEN2, "A800-80GB", 4, "humaneval", 0.0): ((0.95, 1.65), (0.93, 1.90), (0.90, 2.08)),
    (2, QWEN2, "A800-80GB", 4, "humaneval", 1.0): ((0.81, 1.38), (0.73, 1.45), (0.67, 1.46)),
    (2, QWEN2, "A800-80GB", 4, "mtbench", 0.0): ((0.72, 1.26), (0.61, 1.24), (0.52, 1.15)),
    (2, QWEN2, "A800-80GB", 4, "mtbench", 1.0): ((0.67, 1.14), (0.58, 1.20), (0.47, 1.05)),
    (2, QWEN2, "L40", 4, "humaneval", 0.0): ((0.95, 1.79), (0.93, 2.14), (0.90, 2.25)),
    (2, QWEN2, "L40", 4, "humaneval", 1.0): ((0.80, 1.46), (0.74, 1.62), (0.65, 1.64)),
    (2, QWEN2, "L40", 4, "mtbench", 0.0): ((0.71, 1.29), (0.62, 1.26), (0.54, 1.25)),
    (2, QWEN2, "L40", 4, "mtbench", 1.0): ((0.68, 1.28), (0.54, 1.23), (0.48, 1.17)),
}

CELLS: tuple[PaperCell, ...] = tuple(
    PaperCell(table, model[0], model[1], model[2], device, tp, dataset, temp, gamma, sigma, x)
    for (table, model, device, tp, dataset, temp), values in _ROWS.items()
    for gamma, (sigma, x) in zip((2, 3, 4), values))

# The paper's batch-size grid (its sparsity sweep; Tables 1-2 report the peak over the sizes tried).
PAPER_BATCH_SIZES = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 80, 100)
# HumanEval prompts are 38-391 tokens and MT-bench 5-356 (docs/notes/moesd.md section 7); outputs are not stated.
PAPER_CONTEXT_LENGTH = 512


def cells(table: int | None = None, target: str | None = None) -> list[PaperCell]:
    return [c for c in CELLS if (table is None or c.table == table) and (target is None or c.target == target)]
