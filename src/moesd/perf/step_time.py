"""Step times of MoESD Algorithm 1: target decode, target verify, draft, rejection sampling.

    target(t tokens) = bias + k1*G(t) + k2*N(t) + k3*G(t*K/N(t))     (Alg. 1 lines 2-3)
    draft(B)         = draft_bias + draft_k*G(B)                       (line 4)
    reject(B)        = reject_bias + reject_k*B                        (line 5)

G is the knee-normalised Eq. 11 (`moesd.perf.roofline`), so k1, k3 and draft_k are seconds at
the knee. N(t) is Eq. 8 by default, or a measured `RoutingCurve`; an expert budget caps the verify
step's N (MoE-Spec); expert parallelism charges the busiest rank.

Verify token count: the paper writes T_T(B, gamma) and uses B*gamma tokens throughout. A real
verify pass (vLLM, gpt-fast, our engine) scores gamma + 1 positions per sequence: the last accepted
or bonus token plus the gamma drafts. We default to B*(gamma+1) ("engine") so fits on engine
measurements are faithful; "paper" selects B*gamma to reproduce the paper's fits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.experts import RoutingCurve, expected_active_experts, expected_max_active_per_rank
from moesd.perf.roofline import growth_normalized, knee_tokens, to_paper_coefficient

VerifyConvention = Literal["engine", "paper"]


@dataclass(frozen=True)
class StepTimeParams:
    """The 10 parameters of Algorithm 1 (paper names in comments)."""

    bias_s: float  # bias: load the fixed (non-expert) target weights
    k1_s: float  # k1: dense roofline strength, seconds at the knee
    k2_s: float  # k2: load one expert (in every MoE layer)
    k3_s: float  # k3: expert roofline strength, seconds at the knee
    draft_bias_s: float  # draft_bias: load the draft
    draft_k_s: float  # draft_k: draft roofline strength, seconds at the knee
    reject_bias_s: float  # reject_bias
    reject_k_s: float  # reject_k: per sequence in the batch
    lam: float  # lambda: empirical / theoretical ridge point, in [0.2, 1]
    s: float  # base of G's exponential part, in [1, 2]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def to_array(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in self.names()], dtype=float)

    @classmethod
    def from_array(cls, values) -> "StepTimeParams":
        return cls(*(float(v) for v in values))

    def to_dict(self) -> dict[str, float]:
        return {n: getattr(self, n) for n in self.names()}

    @classmethod
    def from_dict(cls, data: dict) -> "StepTimeParams":
        missing = [n for n in cls.names() if n not in data]
        if missing:
            raise MoesdError(f"parameter set lacks {missing}")
        values = []
        for n in cls.names():
            v = data[n]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise MoesdError(f"parameter {n} must be a finite number >= 0, got {v!r}")
            values.append(float(v))
        return cls(*values)

    def paper_convention(self, knee: float) -> dict[str, float]:
        """The same parameters with k1, k3, draft_k in the paper's un-normalised units."""
        out = self.to_dict()
        for n in ("k1_s", "k3_s", "draft_k_s"):
            out[n] = to_paper_coefficient(out[n], knee, self.s)
        return out


@dataclass(frozen=True)
class StepContext:
    """What the step model needs besides the 10 parameters."""

    ridge_point_flops_per_byte: float
    bytes_per_param: float
    verify_convention: VerifyConvention = "engine"
    routing: RoutingCurve | None = None
    expert_budget: int | None = None
    ep: int = 1
    # KV cache (beyond Algorithm 1, which ignores it): tokens of context each sequence holds, and the
    # seconds to read one cached token's K and V in the target (on its TP group) and in the draft.
    context_length: int = 0
    target_kv_s_per_token: float = 0.0
    draft_kv_s_per_token: float = 0.0

    def __post_init__(self) -> None:
        if self.verify_convention not in ("engine", "paper"):
            raise MoesdError(f"verify convention must be 'engine' or 'paper', got {self.verify_convention!r}")
        if self.expert_budget is not None and self.expert_budget < 1:
            raise MoesdError(f"expert budget must be >= 1, got {self.expert_budget}")
        if self.ep < 1:
            raise MoesdError(f"expert-parallel degree must be >= 1, got {self.ep}")

    def knee(self, lam: float) -> float:
        return knee_tokens(lam, self.ridge_point_flops_per_byte, self.bytes_per_param)

    def verify_tokens(self, batch_size, gamma):
        b = np.asarray(batch_size, dtype=float)
        g = np.asarray(gamma, dtype=float)
        return b * (g + 1.0) if self.verify_convention == "engine" else b * g

    def active_experts(self, num_tokens, num_experts, top_k):
        if self.routing is not None:
            return self.routing.active_experts(num_tokens, num_experts, top_k)
        return expected_active_experts(num_tokens, num_experts, top_k)

    def loaded_expert_equivalents(self, num_tokens, num_experts, top_k, active):
        """Experts whose load the step waits for: N, or ep x the busiest rank's count."""
        if self.ep == 1:
            return active
        t = np.broadcast_to(np.asarray(num_tokens, dtype=float), np.shape(active))
        e = np.broadcast_to(np.asarray(num_experts), np.shape(active))
        k = np.broadcast_to(np.asarray(top_k), np.shape(active))
        out = np.empty(np.shape(active), dtype=float)
        for ek in {(int(a), int(b)) for a, b in zip(e.ravel(), k.ravel())}:
            mask = (e == ek[0]) & (k == ek[1])
            iid_max = expected_max_active_per_rank(t[mask], ek[0], ek[1], self.ep)
            iid_mean = expected_active_experts(t[mask], ek[0], ek[1])
            # Scale the imbalance found under i.i.d. routing onto whatever N the routing gives.
            out[mask] = np.asarray(active)[mask] * self.ep * iid_max / iid_mean
        return out


def target_time_s(p: StepTimeParams, ctx: StepContext, num_tokens, num_experts, top_k, budget=None):
    """One target forward over `num_tokens` tokens; returns (seconds, distinct experts loaded)."""
    active = ctx.active_experts(num_tokens, num_experts, top_k)
    if budget is not None:
        active = np.minimum(active, budget)
    per_expert = np.asarray(num_tokens, dtype=float) * np.asarray(top_k, dtype=float) / active
    knee = ctx.knee(p.lam)
    loaded = ctx.loaded_expert_equivalents(num_tokens, num_experts, top_k, active)
    seconds = (
        p.bias_s
        + p.k1_s * growth_normalized(num_tokens, knee, p.s)
        + p.k2_s * loaded
        + p.k3_s * growth_normalized(per_expert, knee, p.s)
    )
    return seconds, active


def draft_time_s(p: StepTimeParams, ctx: StepContext, batch_size):
    """One draft forward producing one token per sequence (the paper's T_D(B, 1))."""
    return p.draft_bias_s + p.draft_k_s * growth_normalized(batch_size, ctx.knee(p.lam), p.s)


def reject_time_s(p: StepTimeParams, batch_size):
    return p.reject_bias_s + p.reject_k_s * np.asarray(batch_size, dtype=float)


def step_times(p: StepTimeParams, ctx: StepContext, batch_size, gamma, num_experts, top_k) -> dict:
    """The four stage times and the whole SD round for arrays of (B, gamma, E, K), broadcast together."""
    b, g, e, k = np.broadcast_arrays(
        np.asarray(batch_size, dtype=float), np.asarray(gamma, dtype=float),
        np.asarray(num_experts, dtype=float), np.asarray(top_k, dtype=float),
    )
    decode_s, active_decode = target_time_s(p, ctx, b, e, k)
    verify_s, active_verify = target_time_s(p, ctx, ctx.verify_tokens(b, g), e, k, budget=ctx.expert_budget)
    # Ceiling: a verify pass over B (gamma+1) tokens is never cheaper than a decode of B tokens through the
    # same verifier (the same budget, if any). Without this a budget far below N(B) would price verification
    # under the unbudgeted decode, and the speedup would exceed the mean acceptance length it is bounded by.
    floor_s = decode_s if ctx.expert_budget is None else target_time_s(p, ctx, b, e, k, budget=ctx.expert_budget)[0]
    verify_s = np.maximum(verify_s, floor_s)
    kv_target = b * ctx.context_length * ctx.target_kv_s_per_token  # every forward reads the whole cache
    draft_s = draft_time_s(p, ctx, b) + b * ctx.context_length * ctx.draft_kv_s_per_token
    reject_s = reject_time_s(p, b)
    return {
        "target_decode_s": decode_s + kv_target,
        "target_verify_s": verify_s + kv_target,
        "draft_s": draft_s,
        "reject_s": reject_s,
        # One whole round, as a serving engine's inter-token latency sees it (Algorithm 1's denominator).
        "sd_round_s": g * draft_s + verify_s + kv_target + reject_s,
        "active_experts_decode": active_decode,
        "active_experts_verify": active_verify,
    }
