"""Export the best draft length per batch size as vLLM's dynamic SD table.

vLLM (PR #32374, docs/features/speculative_decoding/dynamic_speculative_decoding.md) takes
``num_speculative_tokens_per_batch_size``: rows [start_bs, end_bs, K] covering batch-size ranges,
K = 0 disabling speculation. We evaluate every integer batch size and merge equal neighbours.
"""

from __future__ import annotations

import numpy as np

from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.summary import best_gamma, fitting_columns


def best_gamma_schedule(scenario: Scenario, max_batch_size: int, gammas, acceptance: Acceptance) -> list[list[int]]:
    batch_sizes = np.arange(1, max_batch_size + 1)
    grid = predict(scenario, batch_sizes, gammas, acceptance)
    ok = fitting_columns(grid)  # batch sizes past the memory limit get no entry: the engine cannot run them
    best = best_gamma(grid["batch_size"][0][ok], grid["gamma"][:, 0], grid["speedup"][:, ok])
    rows: list[list[int]] = []
    for entry in best:
        b, k = entry["batch_size"], entry["gamma"]
        if rows and rows[-1][2] == k:
            rows[-1][1] = b
        else:
            rows.append([b, b, k])
    return rows


def vllm_config(rows: list[list[int]]) -> dict:
    return {"num_speculative_tokens_per_batch_size": rows}
