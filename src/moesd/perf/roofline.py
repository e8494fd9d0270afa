"""The roofline-shaped growth function G of MoESD Eq. 11, evaluated without overflow.

Eq. 11: G(t) = s^t for t <= lambda*RP, and s^(lambda*RP) * (1 + ln(s) * (t - lambda*RP)) beyond,
with a continuous first derivative at the knee. With a datacenter ridge point of ~300 FLOP/byte,
s^(lambda*RP) spans ~90 orders of magnitude over s in [1, 2] and the paper's k1 has to cancel it.
We therefore use the *knee-normalised* form G~(t) = G(t) / s^(lambda*RP), whose coefficients are
"seconds at the knee"; the paper's coefficient is k_paper = k_knee / s^(lambda*RP)
(`to_paper_coefficient`).

The paper compares a token count t with RP (FLOP/byte) directly, which holds for 2-byte weights
(2 FLOPs per weight per token over 2 bytes). For b-byte weights the knee in tokens is
lambda * RP * b / 2 (`knee_tokens`).
"""

from __future__ import annotations

import math

import numpy as np


def knee_tokens(lam: float, ridge_point_flops_per_byte: float, bytes_per_param: float) -> float:
    """Token count at which a weight GEMM turns compute-bound: lambda * RP * b / 2."""
    return lam * ridge_point_flops_per_byte * bytes_per_param / 2.0


def growth_normalized(t, knee, s):
    """G(t; knee, s) / s^knee: exp(ln(s) * (t - knee)) below the knee, 1 + ln(s) * (t - knee) above."""
    t = np.asarray(t, dtype=float)
    log_s = np.log(s)
    dt = t - knee
    return np.where(dt <= 0.0, np.exp(log_s * np.minimum(dt, 0.0)), 1.0 + log_s * np.maximum(dt, 0.0))


def growth(t, knee, s):
    """Eq. 11 exactly as printed (may overflow for large knees; for tests and reference)."""
    return np.asarray(growth_normalized(t, knee, s)) * float(s) ** float(knee)


def to_paper_coefficient(k_knee_s: float, knee: float, s: float) -> float:
    """Convert a knee-normalised coefficient to the paper's k (k_knee / s^knee), via logs."""
    if k_knee_s <= 0.0:
        return 0.0
    return math.exp(math.log(k_knee_s) - knee * math.log(s))
