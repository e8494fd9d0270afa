"""Predict SD step times, target efficiency and speedup over a grid of batch sizes and draft lengths."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.acceptance import check_alpha, check_sigma, sigma_from_alpha
from moesd.perf.architecture import ArchSpec
from moesd.perf.hardware import Hardware
from moesd.perf.prior import physical_prior
from moesd.perf.speedup import speedup, target_efficiency
from moesd.perf.step_time import StepContext, StepTimeParams, step_times

ROW_FIELDS = (
    "batch_size", "gamma", "active_experts_decode", "active_experts_verify", "target_decode_s",
    "target_verify_s", "draft_s", "reject_s", "target_efficiency", "sigma", "mean_acceptance_length",
    "speedup",
)


@dataclass(frozen=True)
class Acceptance:
    """Either alpha (sigma then follows gamma through Eq. 5) or a fixed sigma for every gamma."""

    alpha: float | None = None
    sigma: float | None = None

    def __post_init__(self) -> None:
        if (self.alpha is None) == (self.sigma is None):
            raise MoesdError("give exactly one of alpha and sigma")
        if self.alpha is not None:
            check_alpha(self.alpha)
        else:
            check_sigma(self.sigma)

    def sigma_for(self, gamma):
        if self.alpha is not None:
            return sigma_from_alpha(self.alpha, gamma)
        return np.full(np.shape(gamma), self.sigma, dtype=float)


@dataclass(frozen=True)
class Scenario:
    target: ArchSpec
    hardware: Hardware
    params: StepTimeParams
    context: StepContext
    draft: ArchSpec | None = None
    tp: int = 1

    @classmethod
    def from_prior(cls, target: ArchSpec, hardware: Hardware, tp: int = 1, draft: ArchSpec | None = None,
                   ep: int = 1, **context_kw) -> "Scenario":
        ctx = StepContext(hardware.ridge_point_flops_per_byte, target.bytes_per_param, ep=ep, **context_kw)
        return cls(target, hardware, physical_prior(target, hardware, tp, draft, ep), ctx, draft, tp)

    def with_params(self, params: StepTimeParams) -> "Scenario":
        return replace(self, params=params)


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
        batch_size=bb,
        gamma=gg,
        sigma=sigma,
        mean_acceptance_length=sigma * (gg + 1.0),
        target_efficiency=target_efficiency(times["target_decode_s"], times["target_verify_s"]),
        speedup=speedup(sigma, gg, times["target_decode_s"], times["target_verify_s"], times["draft_s"],
                        times["reject_s"]),
    )
    return out


def rows(grid: dict[str, np.ndarray]) -> list[dict]:
    """One dict per (batch size, gamma), batch-size-major, with plain Python numbers."""
    n_g, n_b = grid["speedup"].shape
    out = []
    for j in range(n_b):
        for i in range(n_g):
            row = {}
            for f in ROW_FIELDS:
                v = grid[f][i, j]
                row[f] = int(v) if f in ("batch_size", "gamma") else float(v)
            out.append(row)
    return out


__all__ = ["Acceptance", "Scenario", "predict", "rows", "ROW_FIELDS"]
