"""Export the best draft length per batch size as vLLM's dynamic SD table.

vLLM (PR #32374, docs/features/speculative_decoding/dynamic_speculative_decoding.md) takes
``num_speculative_tokens_per_batch_size``: rows [start_bs, end_bs, K] covering batch-size ranges,
K = 0 disabling speculation. We evaluate every integer batch size and merge equal neighbours.
"""

from __future__ import annotations

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.summary import best_gamma, fitting_columns


def deployable_gammas(gammas, speedup: np.ndarray, max_distinct: int, min_gain: float) -> tuple[list[int], float]:
    """At most `max_distinct` draft lengths (0, no SD, counts as one) that keep every batch size within a
    fraction `min_gain` of its best predicted speedup. Engines compile per draft length, so a table that jumps
    between many of them is not deployable. Exhaustive over subsets (gamma <= 16: at most 2^17 small subsets);
    among the feasible subsets of the smallest size, the one with the largest total speedup. Returns the
    chosen set and its worst relative loss; an infeasible request says what the best set loses."""
    import itertools

    g = [0, *gammas]
    table = np.vstack([np.ones((1, speedup.shape[1])), np.maximum(speedup, 0.0)])  # row 0: no SD, 1x
    best = table.max(axis=0)
    fallback = None
    for size in range(1, min(max_distinct, len(g)) + 1):
        chosen = None
        for subset in itertools.combinations(range(len(g)), size):
            got = table[list(subset)].max(axis=0)
            loss = float(np.max(1.0 - got / best))
            total = float(got.sum())
            if fallback is None or (loss, -total) < fallback[1:]:
                fallback = (subset, loss, -total)
            if loss <= min_gain + 1e-12 and (chosen is None or total > chosen[1]):
                chosen = (subset, total, loss)
        if chosen is not None:
            return [g[i] for i in chosen[0]], chosen[2]
    subset, loss, _ = fallback
    raise MoesdError(f"no {max_distinct} draft lengths keep every batch size within {100 * min_gain:g} % of its best "
                     f"speedup (the best {len(subset)} lose up to {100 * loss:.1f} %): raise --min-gain or "
                     f"--max-distinct")


def best_gamma_schedule(scenario: Scenario, max_batch_size: int, gammas, acceptance: Acceptance,
                        max_distinct: int | None = None, min_gain: float = 0.0) -> list[list[int]]:
    batch_sizes = np.arange(1, max_batch_size + 1)
    grid = predict(scenario, batch_sizes, gammas, acceptance)
    ok = fitting_columns(grid)  # batch sizes past the memory limit get no entry: the engine cannot run them
    g = grid["gamma"][:, 0]
    sp = grid["speedup"][:, ok]
    if max_distinct is not None:
        allowed, _ = deployable_gammas([int(x) for x in g], sp, max_distinct, min_gain)
        keep = [i for i, x in enumerate(g) if int(x) in allowed]
        g, sp = g[keep], sp[keep]
        if 0 not in allowed:  # every batch size then speculates, with the best allowed gamma
            sp = np.maximum(sp, 1.0 + 1e-12)
    best = best_gamma(grid["batch_size"][0][ok], g, sp) if len(g) else \
        [{"batch_size": int(b), "gamma": 0} for b in grid["batch_size"][0][ok]]
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


def trtllm_config(rows: list[list[int]]) -> dict:
    """TensorRT-LLM's speculative config fields (tensorrt_llm/llmapi/llm_args.py, DecodingBaseConfig, read
    2026-11-27): `draft_len_schedule` maps batch-size *lower bounds* to draft lengths ({1: 4, 4: 2, 8: 0}: from 1
    draft 4, from 4 draft 2, from 8 no SD), must contain {1: max_draft_len}, and its last entry holds for every
    larger batch size."""
    schedule = {str(start): k for start, _, k in rows}
    return {"max_draft_len": rows[0][2], "draft_len_schedule": schedule}
