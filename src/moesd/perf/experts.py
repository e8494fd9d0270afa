"""How many distinct experts a batch of tokens loads (MoESD Eqs. 6-10), and variants beyond the paper.

The paper's model assumes each token picks each expert independently with probability K/E.
Real routing is correlated within a sequence (MoESD notes section 13; docs/notes/offline.md section 6), so
`RoutingCurve` lets a measured distinct-experts curve D(t) replace Eq. 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesd.errors import MoesdError
from moesd.jsonl import read_json


def check_experts(num_experts: int, top_k: int) -> None:
    if num_experts < 1:
        raise MoesdError(f"number of experts must be >= 1, got {num_experts}")
    if not 1 <= top_k <= num_experts:
        raise MoesdError(f"experts per token must lie in [1, {num_experts}], got {top_k}")


def expected_active_experts(num_tokens, num_experts, top_k):
    """Eq. 8: N(t) = E * (1 - ((E - K) / E)^t), vectorised over any argument."""
    t = np.asarray(num_tokens, dtype=float)
    e = np.asarray(num_experts, dtype=float)
    k = np.asarray(top_k, dtype=float)
    return e * (1.0 - ((e - k) / e) ** t)


def saturation_tokens(num_experts: int, top_k: int, tau: float = 0.95) -> int:
    """Eq. 9: smallest token count t with N(t) >= tau * E, i.e. ceil(log_(1-rho)(1 - tau))."""
    check_experts(num_experts, top_k)
    if not 0.0 < tau < 1.0:
        raise MoesdError(f"tau must lie in (0, 1), got {tau}")
    rho = top_k / num_experts
    if rho >= 1.0:
        return 1
    # A tiny tolerance keeps exact powers (e.g. rho = 0.5, tau = 0.75 -> 2) from rounding up.
    return max(1, math.ceil(math.log(1.0 - tau) / math.log(1.0 - rho) - 1e-9))


def tokens_per_active_expert(num_tokens, top_k, active_experts):
    """Eq. 10: mean tokens each loaded expert processes, t * K / N."""
    return np.asarray(num_tokens, dtype=float) * np.asarray(top_k, dtype=float) / np.asarray(
        active_experts, dtype=float
    )


def expected_max_active_per_rank(num_tokens, num_experts: int, top_k: int, ep: int):
    """Expected distinct experts on the busiest of `ep` expert-parallel ranks (beyond the paper).

    Each rank owns E/ep experts; under Eq. 7's independence each of them is active with
    p = 1 - (1 - K/E)^t, so a rank's count is Binomial(E/ep, p). The step waits for the busiest
    rank, E[max] = sum_k (1 - F(k-1)^ep). With ep = 1 this is Eq. 8 exactly.
    """
    t = np.atleast_1d(np.asarray(num_tokens, dtype=float))
    if ep == 1:
        return expected_active_experts(t, num_experts, top_k)
    if num_experts % ep:
        raise MoesdError(f"expert-parallel degree {ep} must divide the {num_experts} experts")
    from scipy.stats import binom  # imported lazily: scipy.stats costs ~0.3 s to import

    per_rank = num_experts // ep
    p = 1.0 - (1.0 - top_k / num_experts) ** t
    ks = np.arange(per_rank)
    cdf = binom.cdf(ks[None, :], per_rank, p[:, None])  # [len(t), per_rank]
    return np.sum(1.0 - cdf**ep, axis=1)


@dataclass(frozen=True)
class RoutingCurve:
    """A measured distinct-experts curve D(t) for one model (beyond the paper).

    Stored as the *effective independent token count* t_eff(t) that makes Eq. 8 reproduce the
    measurement: t_eff = log(1 - D/E) / log(1 - K/E). Correlated routing gives t_eff < t. The
    ratio t_eff / t is interpolated in log t and held constant outside the measured range, so the
    curve transfers to another K (the paper's sparsity sweep) and never exceeds E.
    """

    num_experts: int
    top_k: int
    tokens: tuple[float, ...]
    distinct_experts: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        check_experts(self.num_experts, self.top_k)
        if len(self.tokens) < 1 or len(self.tokens) != len(self.distinct_experts):
            raise MoesdError("routing curve needs matching, non-empty token and expert lists")
        for t, d in zip(self.tokens, self.distinct_experts):
            if not (math.isfinite(t) and math.isfinite(d)) or t < 1:
                raise MoesdError(f"routing curve point ({t}, {d}) is not a finite point with t >= 1")
            if not 0 < d <= self.num_experts:
                raise MoesdError(
                    f"routing curve: {d} distinct experts at t={t} is outside (0, {self.num_experts}]"
                )

    def _ratio_points(self):
        order = np.argsort(self.tokens)
        t = np.asarray(self.tokens, dtype=float)[order]
        d = np.asarray(self.distinct_experts, dtype=float)[order]
        e, k = self.num_experts, self.top_k
        if k >= e:
            return t, np.ones_like(t)
        # Saturated points (D = E) carry no information about t_eff; clip just below E.
        d = np.minimum(d, e * (1.0 - 1e-9))
        t_eff = np.log1p(-d / e) / np.log1p(-k / e)
        return t, np.maximum(t_eff, 1e-9) / t

    def active_experts(self, num_tokens, num_experts, top_k):
        t_pts, ratio_pts = self._ratio_points()
        t = np.asarray(num_tokens, dtype=float)
        ratio = np.interp(np.log(np.maximum(t, 1.0)), np.log(t_pts), ratio_pts)
        # One token always loads exactly K experts, whatever the correlation.
        t_eff = np.where(t <= 1.0, t, np.maximum(1.0, ratio * t))
        return expected_active_experts(t_eff, num_experts, top_k)

    @classmethod
    def merge(cls, num_experts: int, top_k: int, curves, source: str = "") -> "RoutingCurve | None":
        """Average several measured [[t, distinct], ...] curves (e.g. one per bench point) per t."""
        pts: dict[float, list[float]] = {}
        for curve in curves:
            for t, d in curve or []:
                pts.setdefault(float(t), []).append(float(d))
        if not pts:
            return None
        ts = sorted(pts)
        return cls(num_experts, top_k, tuple(ts), tuple(sum(pts[t]) / len(pts[t]) for t in ts), source)

    @classmethod
    def from_file(cls, path: str | Path) -> "RoutingCurve":
        """Read ``{"num_experts": E, "top_k": K, "points": [[t, D], ...]}``."""
        data = read_json(path, "routing curve")
        try:
            if isinstance(data, dict) and "points" not in data:  # the `moesd generate --json` output it came from
                data = (data.get("metrics") or data).get("routing_curve", data)
            points = data["points"]
            return cls(
                num_experts=int(data["num_experts"]),
                top_k=int(data["top_k"]),
                tokens=tuple(float(p[0]) for p in points),
                distinct_experts=tuple(float(p[1]) for p in points),
                source=str(path),
            )
        except OSError as exc:
            raise MoesdError(f"cannot read routing curve {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise MoesdError(f"malformed routing curve {path}: {exc!r}") from None

