"""MoESD Eq. 4 and target efficiency.

Speedup = sigma*(gamma+1) * T_T(B,1) / (gamma*T_D(B,1) + T_T(B,verify) + T_reject)

Algorithm 1's line 11 prints the denominator as draft + ar + verify + reject. That caps the
speedup at sigma*(gamma+1)/2 (2.25 at sigma 0.9, gamma 4), below the paper's own measured 2.29x,
so it is a misprint; we implement Eq. 4 (docs/notes/moesd.md section 6.2).
"""

from __future__ import annotations

import numpy as np


def speedup(sigma, gamma, target_decode_s, target_verify_s, draft_s, reject_s):
    gamma = np.asarray(gamma, dtype=float)
    produced_per_round = np.asarray(sigma, dtype=float) * (gamma + 1.0)
    round_s = gamma * np.asarray(draft_s) + np.asarray(target_verify_s) + np.asarray(reject_s)
    return produced_per_round * np.asarray(target_decode_s) / round_s


def target_efficiency(target_decode_s, target_verify_s):
    """T_T(B, 1) / T_T(B, verify): 1 when verifying is free, -> 1/(gamma+1) when compute-bound."""
    return np.asarray(target_decode_s) / np.asarray(target_verify_s)
