"""The objective of `--gamma auto` (engine/adaptive_gamma.py) for a static batch. Where no request waits for a row, what
matters is when the last row ends, not tokens per second over all rows: in a static batch whose rows run to a limit,
rounds that only move the rows that accept well ahead do not end it sooner (stdlib B = 16, 128 tokens: auto's rounds won
per step, and the run still took 125 steps against autoregressive decoding's 127, 85-88 of them decoding the rows left
behind at 0.83x its speed; docs/results.md section 15). Holding gamma for the rest of the run, row r needs s_r = R_r /
e_r(gamma) more steps (R_r its remaining tokens, e_r its expected tokens per step); between the k-th and the (k+1)-th
row to end, B - k rows step, each step costing the cost model's T(B - k, gamma), so the rest takes sum_k (s_(k+1) -
s_(k)) x T(B - k, gamma) (s sorted). Where steps cost little per row (a per-forward overhead, a memory-bound GPU) the
slowest row sets it; where they cost mostly per row, finishing rows early shrinks the batch and every row's progress
counts; a MoE is both, its cost concave in the batch (expert loading saturates). The first form split a step into a part
per step F and one per row P = T(B) - T(B - 1), F x max_r(s_r) + P x sum_r(s_r): at the saturated CPU MoE's B = 13 that
made a round's P ~0 and F ~ a whole round, so the slowest row alone was priced at a full batch's round and auto decoded
the rest of the run (0.94x the best fixed gamma at B = 16, 0.87x on the mixed-lengths batch; docs/results.md section
15). A draft that has not started adds its prefill, `start_s`, to every draft length >= 1."""

from __future__ import annotations

import numpy as np


def finish_rates(per_row: np.ndarray, remaining: np.ndarray, by_batch_s: np.ndarray,
                 start_s: float = 0.0) -> np.ndarray:
    """Remaining tokens per second until the last row ends, per draft length 0..top, holding it for the rest of the
    run. `per_row`: [rows, top + 1] expected tokens per step of each row; `remaining`: each row's remaining
    tokens; `by_batch_s`: [rows, top + 1] step seconds at batch sizes 1..rows (row k: batch size k + 1); `start_s`:
    a draft that has not started, added to every draft length >= 1."""
    steps = remaining[:, None] / np.minimum(per_row, np.maximum(remaining, 1.0)[:, None])  # [rows, top + 1]
    ends = np.sort(steps, axis=0)
    total_s = (np.diff(ends, axis=0, prepend=0.0) * by_batch_s[::-1]).sum(axis=0)
    total_s[1:] += start_s
    return float(remaining.sum()) / total_s
