"""The engine's option names and ranges, declared once (torch-free: the CLI and bench validation read them).

Every caller (EngineSpec, the bench sweep, budget calibration, argparse choices) validates through these
functions, so a rule changes in one place.
"""

from __future__ import annotations

import math

from moesd.errors import MoesdError

MAX_GAMMA = 16
DRAFT_METHODS = ("model", "ngram", "synthetic", "none")
ROUTINGS = ("model", "uniform")
KV_CACHES = ("static", "ragged")  # engine/static_kv.py, engine/ragged_kv.py
BUDGET_MODES = ("substitution", "truncation")
BUDGET_SCOPES = ("batch", "sequence")


def check_gamma(gamma: int, lowest: int = 0) -> int:
    if not lowest <= gamma <= MAX_GAMMA:
        raise MoesdError(f"gamma must lie in {lowest}..{MAX_GAMMA}, got {gamma}")
    return gamma


def check_flag(name: str, value) -> bool:
    """An on / off option: True or False, or 1 or 0 from the command line's option lists (which compare equal)."""
    if value not in (True, False):
        raise MoesdError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_routing(routing: str) -> str:
    if routing not in ROUTINGS:
        raise MoesdError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
    return routing


def check_kv_cache(kind: str) -> str:
    if kind not in KV_CACHES:
        raise MoesdError(f"kv cache must be one of {', '.join(KV_CACHES)}, got {kind!r}")
    return kind


def check_sampling(temperature: float, top_p: float) -> None:
    # NaN compares false with everything, so it is refused by the finiteness test, not by a range.
    if not (math.isfinite(temperature) and temperature >= 0):
        raise MoesdError(f"temperature must be a finite number >= 0, got {temperature}")
    if 0 < temperature < 1e-4:
        raise MoesdError(f"temperature {temperature} would overflow the softmax: use 0 (greedy) or >= 1e-4")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise MoesdError(f"top_p must lie in (0, 1], got {top_p}")


def check_budget(budget: int | None, mode: str, scope: str) -> None:
    if mode not in BUDGET_MODES:
        raise MoesdError(f"budget mode must be one of {', '.join(BUDGET_MODES)}, got {mode!r}")
    if scope not in BUDGET_SCOPES:
        raise MoesdError(f"budget scope must be one of {', '.join(BUDGET_SCOPES)}, got {scope!r}")
    if budget is not None and budget < 1:
        raise MoesdError(f"expert budgets must be >= 1, got {budget}")


def check_alpha(alpha: float | None) -> float:
    if alpha is None or not (math.isfinite(alpha) and 0 <= alpha <= 1):
        raise MoesdError("synthetic drafting needs --alpha in [0, 1]")
    return alpha
