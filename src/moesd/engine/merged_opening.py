"""What one SD round merged with the target's prefill is worth where the rest of the run is expected to decode.

`AdaptiveGamma.opens_with_round` chooses between a plain prefill and a first round merged with it. Its rule prices
that round as any other, a whole round against a decode step, and so sees a loss wherever rounds lose. But a merged
round only adds to a forward the run pays anyway: g more tokens per row in the target's prefill, the drafting and
the rejection (StepCostModel.merged_extra_s), and the draft's own prefill. Against that stand the tokens it commits
beyond the prefill's one, each a decode step's worth, and what it shows of each request's acceptance before the
next decision. A CPU MoE engine at B = 1 (a round 1.52x a decode step, gamma 1 1.04x autoregressive decoding over
requests of alpha 0.2-0.9) opened calls with a plain prefill on verdicts that followed the previous request
(0.65-1.60x) and decoded whole calls of requests that gamma 1 speeds up 1.14x (docs/results.md section 15).
"""

from __future__ import annotations

import numpy as np


def merged_round_gain_s(per_row: np.ndarray, remaining, decode_s: float, end_decode_s: float,
                        first_factor: float = 1.0) -> np.ndarray:
    """[top + 1]: the decoding time one merged round of draft length 0..top is expected to save, from each row's
    expected tokens per draft length (`per_row`, [rows, top + 1], engine/round_tokens.py), each row's acceptance
    scaled by `first_factor` as a first round's (RequestAcceptance.first_round_factor): P(accepts >= k) by its k-th
    power.
    - Where a request waits for a row (`remaining` None: the throughput objective), each token a row commits beyond
      one is a decode step's worth of that row's share: (tokens - 1) x `decode_s`.
    - In a static batch, only the rows with the most tokens left decide when the run ends: its last steps go only
      where each of them accepted k drafts, sum_k prod_rows P(row accepts >= k), each a decode step at their batch
      size (`end_decode_s`). Shorter rows that finish sooner make the tail's steps smaller: not counted (a bound)."""
    accept_at_least = np.clip(np.diff(per_row, axis=1), 0.0, 1.0)  # P(accepts >= k), k = 1..top
    accept_at_least = accept_at_least * first_factor ** np.arange(1, accept_at_least.shape[1] + 1)
    if remaining is None:
        return np.concatenate([[0.0], np.cumsum(accept_at_least.mean(axis=0))]) * decode_s
    remaining = np.asarray(remaining, dtype=float)
    last = remaining == remaining.max()
    return np.concatenate([[0.0], np.cumsum(np.prod(accept_at_least[last], axis=0))]) * end_decode_s


def best_merged_round(gain_s: np.ndarray, extra_s: np.ndarray, start_s: float) -> tuple[int, float]:
    """(the draft length 1..top worth most, its expected net seconds: `gain_s` less `extra_s` and the draft's prefill
    `start_s`), the length 0 where none is worth more than it adds."""
    net_s = gain_s[1:] - extra_s[1:] - start_s
    g = int(np.argmax(net_s)) + 1
    return (g if net_s[g - 1] > 0.0 else 0), float(net_s[g - 1])
