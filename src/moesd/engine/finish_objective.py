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
15). A draft that has not started adds its prefill, `start_s`, to every plan that speculates.

Held for the rest of the run, a draft length is priced as if the policy would never change it, though it is chosen
again at every step. Where whether SD pays depends on the batch size, that undervalues both sides: on a batch of 8
short and 8 long requests, speculating pays while all 16 run and the 8 long ones dominate the time, so "gamma 2 to the
end" and "decode to the end" both carried the long rows' verdict, and auto decoded the 16-row stretch too (0.96x gamma 2
on the CPU MoE's mixed-lengths batch in two tables; docs/results.md section 15). So a draft length now is worth the
best two-phase plan that starts with it: a until j rows have ended, then b for the rest (j a quarter, half, ... of the
batch; holding a is the plan that never switches). The policy decides again every step, so only the first phase is
ever carried out; the second is what the first leaves the rest of the run to."""

from __future__ import annotations

import numpy as np


def switch_points(rows: int, most: int = 7) -> np.ndarray:
    """Where a plan may switch draft length, as the number of rows ended: every count up to `most` + 1 rows, then
    eighths of the batch (those include its halves and quarters, where a batch of two kinds of request splits)."""
    if rows <= most + 1:
        return np.arange(1, rows)
    return np.unique(np.round(rows * np.arange(1, most + 1) / (most + 1)).astype(int))


def finish_rates(per_row: np.ndarray, remaining: np.ndarray, by_batch_s: np.ndarray,
                 start_s: float = 0.0, plans: bool = True) -> np.ndarray:
    """Remaining tokens per second until the last row ends, per draft length a = 0..top now: the best plan "a until j
    rows have ended, then b" (or a to the end). `per_row`: [rows, top + 1] expected tokens per step of each row;
    `remaining`: each row's remaining tokens; `by_batch_s`: [rows, top + 1] step seconds at batch sizes 1..rows
    (row k: batch size k + 1); `start_s`: a draft that has not started, added to every plan that speculates;
    `plans` False: each draft length held to the end only (the objective before two-phase plans)."""
    n = per_row.shape[0]
    per_step = np.minimum(per_row, np.maximum(remaining, 1.0)[:, None])  # a row takes no more than it has left
    steps = remaining[:, None] / per_step  # [rows, a]: each row's steps holding a
    ends = np.sort(steps, axis=0)
    by_phase_s = by_batch_s[::-1]  # row k: the batch while k rows have ended
    stretch = ends.copy()
    stretch[1:] -= ends[:-1]
    until_s = np.cumsum(stretch * by_phase_s, axis=0)  # [rows, a]: row k, until k + 1 rows have ended, holding a
    total_s = until_s[-1].copy()  # holding a to the end
    total_s[1:] += start_s
    if plans and n >= 2:
        js = switch_points(n)
        first_s = until_s[js - 1]  # [J, a]
        # sum_k (s_(k) - s_(k - 1)) x T_k = sum_k s_(k) x (T_k - T_(k + 1)), T_rows = 0: one product over the sorted
        # steps, without their differences
        step_down_s = by_phase_s - np.concatenate([by_phase_s[1:], np.zeros_like(by_phase_s[:1])])
        # Each row's steps left when j rows have ended under a, in a's steps, then in b's: [a, J, rows, b]. A row
        # that has ended has none; sorted, those come first and their stretches are empty, so row k of the sorted
        # steps still steps at batch size rows - k.
        left = np.maximum(steps.T[:, None, :] - ends.T[:, js - 1, None], 0.0)  # [a, J, rows]
        after = left[..., None] * (per_step.T[:, None, :, None] / per_step[None, None, :, :])
        after.sort(axis=2)
        plans_s = first_s.T[:, :, None] + np.einsum("ajrb,rb->ajb", after, step_down_s)  # [a, J, b]
        plans_s[1:] += start_s
        plans_s[0, :, 1:] += start_s
        total_s = np.minimum(total_s, plans_s.min(axis=(1, 2)))
    return float(remaining.sum()) / total_s
