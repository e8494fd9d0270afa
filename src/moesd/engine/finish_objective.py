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

from functools import lru_cache

import numpy as np


def switch_points(rows: int, most: int = 7) -> np.ndarray:
    """Where a plan may switch draft length, as the number of rows ended: every count up to `most` + 1 rows, then
    eighths of the batch (those include its halves and quarters, where a batch of two kinds of request splits)."""
    if rows <= most + 1:
        return np.arange(1, rows)
    return np.unique(np.round(rows * np.arange(1, most + 1) / (most + 1)).astype(int))


def tokens_variance(per_row: np.ndarray) -> np.ndarray:
    """[rows, top + 1]: the variance of the tokens one step commits in each row, per draft length (0 for decoding),
    from `per_row`'s expected tokens. A round commits 1 + A tokens, A = sum_i X_i with X_i = 1 when the first i + 1
    drafts are accepted; the X_i are nested (X_j <= X_i for j > i), so E[X_i X_j] = q_max(i, j), q_i = E[X_i], and
    E[A^2] = sum_i (2 i + 1) q_i."""
    q = np.diff(per_row, axis=1)
    second = np.cumsum((2 * np.arange(q.shape[1]) + 1) * q, axis=1)
    out = np.zeros_like(per_row)
    out[:, 1:] = np.maximum(second - (per_row[:, 1:] - 1.0) ** 2, 0.0)
    return out


@lru_cache(maxsize=256)
def _normal_draws(rows: int, draws: int) -> np.ndarray:
    """[draws, rows] standard normals, the same at every call (fixed seed; numpy fills them row by row, so a batch's
    first rows draw what a smaller batch's did): the decision stays a function of the run's history, and the steps of
    one run compare their options under the same draws. Read-only: every call shares the cached array."""
    out = np.random.default_rng(20261203).standard_normal((rows, draws)).T
    out.flags.writeable = False
    return out


def expected_ends(steps: np.ndarray, sd: np.ndarray, draws: int) -> np.ndarray:
    """[rows, a]: each row's steps to its end replaced by the expected order statistic of its rank (by mean), each
    row's steps drawn normal(steps, sd) independently, estimated over `draws` common draws. The last row ends at the
    expected maximum, later than the latest expected end: 64 rows accepting 0.2-0.9 at gamma 1 need ~27 rounds for
    32 tokens in the slowest, with a standard deviation of ~1.7 rounds, and some nine rows lie within one standard
    deviation of it."""
    order = np.argsort(steps, axis=0, kind="stable")
    drawn = np.maximum(steps.T[None] + sd.T[None] * _normal_draws(steps.shape[0], draws)[:, None, :], 0.0)
    drawn.sort(axis=2)  # [draws, a, rows]
    out = np.empty_like(steps)
    np.put_along_axis(out, order, drawn.mean(axis=0).T, axis=0)
    return out


def finish_rates(per_row: np.ndarray, remaining: np.ndarray, by_batch_s: np.ndarray,
                 start_s: float = 0.0, plans: bool = True, draws: int = 0,
                 per_row_var: np.ndarray | None = None) -> np.ndarray:
    """Remaining tokens per second until the last row ends, per draft length a = 0..top now: the best plan "a until j
    rows have ended, then b" (or a to the end). `per_row`: [rows, top + 1] expected tokens per step of each row;
    `remaining`: each row's remaining tokens; `by_batch_s`: [rows, top + 1] step seconds at batch sizes 1..rows
    (row k: batch size k + 1); `start_s`: a draft that has not started, added to every plan that speculates;
    `plans` False: each draft length held to the end only (the objective before two-phase plans). `draws` > 0: the
    rows' ends are the expected order statistics of random ends (`expected_ends`; renewal counting: a row that
    needs R tokens at mean m and variance v per step takes R / m steps with variance R v / m^3), not the ends of
    their expected progress, which a round's chance makes optimistic for SD alone (decode steps commit one token
    each): auto at the CPU MoE's B = 64 speculated on predicted gains of 1.03-1.20x where the rest of the run after
    its rounds took 1.09x what it predicted (after decode steps 1.03x; `adaptive_gamma_diagnose.py --finish`).
    `per_row_var`: the variance of `per_row` itself (each row's acceptance is an estimate), adding R^2 var / m^4
    to a row's steps' variance."""
    n = per_row.shape[0]
    per_step = np.minimum(per_row, np.maximum(remaining, 1.0)[:, None])  # a row takes no more than it has left
    steps = remaining[:, None] / per_step  # [rows, a]: each row's steps holding a
    if draws and n >= 2:
        # A row whose next step may take all it has left ends in that step.
        r = remaining[:, None]
        var = r * tokens_variance(per_row) / per_step ** 3
        if per_row_var is not None:
            var = var + r ** 2 * per_row_var / per_step ** 4
        sd = np.where(per_row < r, np.sqrt(var), 0.0)
        steps = expected_ends(steps, sd, draws)
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
