"""Predict SD step times, target efficiency and speedup over a grid of batch sizes and draft lengths."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.acceptance import (alpha_from_acceptance_rate, alpha_from_mean_acceptance_length, check_alpha,
                                   check_sigma, sigma_from_alpha)
from moesd.perf.acceptance_curve import AcceptanceCurve
from moesd.perf.architecture import ArchSpec
from moesd.perf.hardware import Hardware
from moesd.perf.prior import check_parallelism, physical_prior
from moesd.perf.profiles import ExecutionProfile
from moesd.perf.speedup import speedup, target_efficiency
from moesd.perf.step_time import StepContext, StepTimeParams, step_times

ROW_FIELDS = (
    "batch_size", "gamma", "active_experts_decode", "active_experts_verify", "target_decode_s",
    "target_verify_s", "draft_s", "reject_s", "target_efficiency", "sigma", "mean_acceptance_length",
    "speedup", "fits_memory",
)


@dataclass(frozen=True)
class Acceptance:
    """Exactly one of (glossary in perf/acceptance.py):

    - alpha: per-token acceptance probability; sigma follows gamma through Eq. 5;
    - acceptance_rate: vLLM's accepted / draft tokens measured at draft length `at_gamma` (-> alpha);
    - mean_acceptance_length: tokens per round, bonus included, measured at `at_gamma` (-> alpha);
    - sigma: held fixed for every gamma, as the paper's tables report it;
    - curve: mean acceptance length per gamma (real drafts are not i.i.d. per position).
    """

    alpha: float | None = None
    sigma: float | None = None
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None
    at_gamma: int | None = None
    curve: AcceptanceCurve | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("alpha", "sigma", "acceptance_rate", "mean_acceptance_length", "curve")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise MoesdError("give exactly one of alpha, acceptance rate, mean acceptance length, sigma and an "
                             f"acceptance curve (got {', '.join(given) or 'none'})")
        if self.acceptance_rate is not None or self.mean_acceptance_length is not None:
            if self.at_gamma is not None and self.at_gamma < 1:
                raise MoesdError(f"the draft length it was measured at must be >= 1, got {self.at_gamma}")
            if self.at_gamma is None:
                raise MoesdError("an acceptance rate or mean acceptance length is measured at one gamma: give it "
                                 "(--measured-at-gamma, or a single --gamma)")
            alpha = (alpha_from_acceptance_rate(self.acceptance_rate, self.at_gamma)
                     if self.acceptance_rate is not None
                     else alpha_from_mean_acceptance_length(self.mean_acceptance_length, self.at_gamma))
            object.__setattr__(self, "alpha", alpha)
        if self.alpha is not None:
            check_alpha(self.alpha)
        elif self.sigma is not None:
            check_sigma(self.sigma)

    @property
    def varies_with_gamma(self) -> bool:
        """Whether choosing gamma is meaningful (a fixed sigma makes longer drafts free)."""
        return self.sigma is None

    def sigma_for(self, gamma):
        if self.curve is not None:
            g = np.asarray(gamma)
            return np.vectorize(lambda x: self.curve.sigma(int(x)), otypes=[float])(g)
        if self.alpha is not None:
            return sigma_from_alpha(self.alpha, gamma)
        return np.full(np.shape(gamma), self.sigma, dtype=float)

    def describe(self) -> dict:
        out = {"alpha": self.alpha, "sigma": self.sigma}
        if self.acceptance_rate is not None:
            out.update(acceptance_rate=self.acceptance_rate, at_gamma=self.at_gamma)
        if self.mean_acceptance_length is not None:
            out.update(mean_acceptance_length=self.mean_acceptance_length, at_gamma=self.at_gamma)
        if self.curve is not None:
            out["acceptance_curve"] = {str(g): m for g, m in sorted(self.curve.mean_acceptance_length.items())}
        return out


# vLLM's default gpu_memory_utilization: the share of device memory weights and KV cache may take.
MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class Scenario:
    target: ArchSpec
    hardware: Hardware
    params: StepTimeParams
    context: StepContext
    draft: ArchSpec | None = None
    tp: int = 1
    profile: ExecutionProfile | None = None
    kv_bytes_per_element: float = 2.0

    @classmethod
    def from_prior(cls, target: ArchSpec, hardware: Hardware, tp: int = 1, draft: ArchSpec | None = None,
                   ep: int = 1, profile: ExecutionProfile | None = None, context_length: int = 0,
                   kv_bytes_per_element: float = 2.0, kv_in_step_time: bool = True, **context_kw) -> "Scenario":
        """`kv_in_step_time` False: the KV cache only enters the memory check (fitted parameters already
        carry the KV reads of the runs they were fitted to)."""
        if context_length < 0:
            raise MoesdError(f"context length must be >= 0, got {context_length}")
        check_parallelism(tp, ep)
        bw = hardware.effective_bandwidth_bytes_per_s
        on = 1.0 if kv_in_step_time else 0.0
        ctx = StepContext(hardware.ridge_point_flops_per_byte, target.bytes_per_param, ep=ep,
                          context_length=context_length,
                          target_kv_s_per_token=on * target.kv_bytes_per_token(kv_bytes_per_element) / (bw * tp),
                          draft_kv_s_per_token=on * draft.kv_bytes_per_token(kv_bytes_per_element) / bw if draft else 0.0,
                          **context_kw)
        return cls(target, hardware, physical_prior(target, hardware, tp, draft, ep, profile), ctx, draft, tp,
                   profile, kv_bytes_per_element)

    def with_params(self, params: StepTimeParams) -> "Scenario":
        return replace(self, params=params)

    def memory_per_device_bytes(self, batch_sizes) -> np.ndarray:
        """The busiest device's weights plus KV cache for B sequences at the context length: the target's
        share of a TP group, plus the draft, which runs on the first device."""
        b = np.asarray(batch_sizes, dtype=float)
        ctx = self.context.context_length
        need = (self.target.weight_bytes + b * ctx * self.target.kv_bytes_per_token(self.kv_bytes_per_element)) / self.tp
        if self.draft is not None:
            need = need + self.draft.weight_bytes + b * ctx * self.draft.kv_bytes_per_token(self.kv_bytes_per_element)
        return need

    def fits_memory(self, batch_sizes) -> np.ndarray:
        return self.memory_per_device_bytes(batch_sizes) <= MEMORY_UTILIZATION * self.hardware.memory_bytes


def check_grid(batch_sizes, gammas) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(sorted(set(int(x) for x in batch_sizes)), dtype=int)
    g = np.asarray(sorted(set(int(x) for x in gammas)), dtype=int)
    if b.size == 0 or g.size == 0:
        raise MoesdError("need at least one batch size and one gamma")
    if b.min() < 1:
        raise MoesdError(f"batch size must be >= 1, got {b.min()}")
    if g.min() < 1:
        raise MoesdError(f"gamma must be >= 1, got {g.min()}")
    return b, g


def predict(scenario: Scenario, batch_sizes, gammas, acceptance: Acceptance) -> dict[str, np.ndarray]:
    """Columns of ROW_FIELDS, each a [len(gammas), len(batch_sizes)] array (gamma-major)."""
    b, g = check_grid(batch_sizes, gammas)
    bb, gg = np.meshgrid(b, g)
    t = scenario.target
    times = step_times(scenario.params, scenario.context, bb, gg, t.num_experts, t.experts_per_token)
    sigma = acceptance.sigma_for(gg)
    out = dict(times)
    out.update(
        fits_memory=scenario.fits_memory(bb),
        batch_size=bb,
        gamma=gg,
        sigma=sigma,
        mean_acceptance_length=sigma * (gg + 1.0),
        target_efficiency=target_efficiency(times["target_decode_s"], times["target_verify_s"]),
        speedup=speedup(sigma, gg, times["target_decode_s"], times["target_verify_s"], times["draft_s"],
                        times["reject_s"]),
    )
    return out


def kv_note(scenario: Scenario, grid: dict[str, np.ndarray]) -> str | None:
    """A note when, at the largest batch size that fits, a decode step reads at least half as many KV-cache
    bytes as expert bytes: then the cache, not the experts, decides what verification costs."""
    ctx = scenario.context.context_length
    fits = np.asarray(grid["fits_memory"])[0]
    if ctx == 0 or not fits.any() or not scenario.target.is_moe:
        return None
    j = int(np.flatnonzero(fits)[-1])
    b = int(grid["batch_size"][0][j])
    kv = b * ctx * scenario.target.kv_bytes_per_token(scenario.kv_bytes_per_element)
    experts = float(grid["active_experts_decode"][0][j]) * scenario.target.expert_bytes
    if kv < 0.5 * experts:
        return None
    return (f"at B={b} a decode step reads {kv / 1e9:.1f} GB of KV cache against {experts / 1e9:.1f} GB of experts: "
            f"the KV cache rivals expert loading (MoESD's model assumes it does not)")


def rows(grid: dict[str, np.ndarray]) -> list[dict]:
    """One dict per (batch size, gamma), batch-size-major, with plain Python numbers."""
    n_g, n_b = grid["speedup"].shape
    out = []
    for j in range(n_b):
        for i in range(n_g):
            row = {}
            for f in ROW_FIELDS:
                v = grid[f][i, j]
                row[f] = int(v) if f in ("batch_size", "gamma") else bool(v) if f == "fits_memory" else float(v)
            out.append(row)
    return out


__all__ = ["Acceptance", "Scenario", "predict", "rows", "ROW_FIELDS"]
