"""Fit Algorithm 1's parameters to measurements (MoESD App. C), with held-out error.

Nonlinear least squares with scipy's trust-region-reflective method under the paper's bounds.
Residuals are log(predicted / measured) for the speedup and, where the file has them, for each
stage time: stage times pin the absolute time scale and separate draft, target and rejection
parameters that the speedup alone cannot tell apart. Parameters are scaled by their starting
values so the optimiser sees O(1) numbers (they span microseconds to tens of milliseconds).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.architecture import ArchSpec
from moesd.perf.hardware import Hardware
from moesd.perf.measurements import STAGE_COLUMNS, Measurements
from moesd.perf.prior import paper_bounds, physical_prior, prior_lambda
from moesd.perf.speedup import speedup
from moesd.perf.step_time import StepContext, StepTimeParams, step_times

_TINY = 1e-12


class TooFewPoints(MoesdError):
    """Fewer measurements than Algorithm 1's free parameters: use `fit_few`."""


@dataclass
class FitResult:
    params: StepTimeParams
    free: tuple[str, ...]
    residual_pct: np.ndarray  # speedup: 100 * (predicted / measured - 1), per measurement
    rmse_speedup: float
    n_points: int
    elapsed_s: float
    converged: bool
    message: str

    def summary(self) -> dict:
        err = np.abs(self.residual_pct)
        return {
            "n_points": self.n_points,
            "free_parameters": list(self.free),
            "rmse_speedup": self.rmse_speedup,
            "median_abs_pct_error": float(np.median(err)),
            "max_abs_pct_error": float(np.max(err)),
            "elapsed_s": self.elapsed_s,
            "converged": self.converged,
            "message": self.message,
        }


def predicted_speedup(params: StepTimeParams, ctx: StepContext, m: Measurements) -> tuple[np.ndarray, dict]:
    times = step_times(params, ctx, m.batch_size, m.gamma, m.num_experts, m.experts_per_token)
    sp = speedup(m.sigma, m.gamma, times["target_decode_s"], times["target_verify_s"], times["draft_s"],
                 times["reject_s"])
    return sp, times


def _starting_point(m: Measurements, hw: Hardware, tp: int, target: ArchSpec | None,
                    draft: ArchSpec | None) -> StepTimeParams:
    if target is not None:
        return physical_prior(target, hw, tp, draft)
    # No architecture: start from the measured decode time if there is one, else unit scale
    # (speedup alone fixes only ratios of times).
    decode = m.stages.get("target_decode_s")
    scale = float(np.nanmin(decode)) if decode is not None else 1e-2
    e = float(np.median(m.num_experts))
    k = float(np.median(m.experts_per_token))
    draft_t = m.stages.get("draft_s")
    draft_scale = float(np.nanmin(draft_t)) if draft_t is not None else 0.05 * scale
    return StepTimeParams(0.3 * scale, 0.1 * scale, 0.7 * scale / k if e > 1 else 0.0, 0.1 * scale if e > 1 else 0.0,
                          0.8 * draft_scale, 0.1 * draft_scale, 0.0, 0.01 * scale / 10, prior_lambda(hw), 1.02)


def _has_draft(m: Measurements, draft: ArchSpec | None) -> bool:
    if draft is not None:
        return True
    d = m.stages.get("draft_s")
    # A file whose draft times are all zero comes from model-free drafting (prompt lookup).
    return not (d is not None and np.nanmax(d) == 0.0)


class _Problem:
    """Maps between the optimiser's scaled vector and StepTimeParams, and computes residuals."""

    def __init__(self, m: Measurements, ctx: StepContext, start: StepTimeParams, lower, upper):
        self.m, self.ctx = m, ctx
        names = StepTimeParams.names()
        # Optimise ln(s) rather than s: the knee-scale slope is ln(s), ~0.01 for a GPU.
        start_vec = start.to_array()
        s_idx = names.index("s")
        start_vec[s_idx] = math.log(max(start.s, 1.0 + 1e-6))
        lower, upper = lower.copy(), upper.copy()
        lower[s_idx], upper[s_idx] = math.log(lower[s_idx]), math.log(upper[s_idx])
        self.free_idx = np.flatnonzero(upper > lower)
        self.fixed = np.clip(start_vec, lower, upper)
        self.s_idx = s_idx
        x0 = np.clip(start_vec, lower, upper)[self.free_idx]
        lo, hi = lower[self.free_idx], upper[self.free_idx]
        scale = np.where(np.abs(x0) > 0, np.abs(x0), np.where(np.isfinite(hi), np.maximum(hi, 1e-9), 1.0))
        scale = np.where(scale > 0, scale, 1.0)
        self.scale = scale
        # TRF needs a strictly interior start.
        span = np.where(np.isfinite(hi - lo), hi - lo, np.abs(x0) + 1.0)
        self.x0 = np.clip(x0, lo + 1e-3 * span, hi - 1e-3 * span) / scale
        self.lo, self.hi = lo / scale, hi / scale
        self.names = tuple(names[i] for i in self.free_idx)
        self.stage_cols = [c for c in STAGE_COLUMNS if c in m.stages]

    def params(self, x) -> StepTimeParams:
        """Parameters for one vector x [n_free], or a batch of them [n, n_free] (fields [n, 1])."""
        x = np.asarray(x, dtype=float)
        vec = np.broadcast_to(self.fixed, x.shape[:-1] + self.fixed.shape).copy()
        vec[..., self.free_idx] = x * self.scale
        vec[..., self.s_idx] = np.exp(vec[..., self.s_idx])
        if vec.ndim == 1:
            return StepTimeParams.from_array(vec)
        return StepTimeParams(*(vec[:, i : i + 1] for i in range(vec.shape[1])))

    def residuals(self, x) -> np.ndarray:
        p = self.params(x)
        sp, times = predicted_speedup(p, self.ctx, self.m)
        parts = [np.log(np.maximum(sp, _TINY) / self.m.speedup)]
        for col in self.stage_cols:
            meas = self.m.stages[col]
            ok = ~np.isnan(meas) & (meas > 0)
            parts.append(np.log(np.maximum(times[col][..., ok], _TINY) / meas[ok]))
        return np.concatenate(parts, axis=-1)

    def jacobian(self, x) -> np.ndarray:
        """Forward differences, all perturbed vectors evaluated in one broadcast model call.

        scipy's '2-point' Jacobian calls the model n_free + 1 times per iteration; the model is
        pure numpy over arrays, so a [n_free + 1, n_free] batch costs about one call.
        """
        x = np.asarray(x, dtype=float)
        step = 1e-7 * np.maximum(1.0, np.abs(x))
        # Step away from an upper bound so the perturbed point stays feasible.
        step = np.where(x + step > self.hi, -step, step)
        batch = np.vstack([x, x + np.diag(step)])
        r = self.residuals(batch)
        return ((r[1:] - r[0]) / step[:, None]).T


def fit(m: Measurements, hw: Hardware, ctx: StepContext, tp: int = 1, target: ArchSpec | None = None,
        draft: ArchSpec | None = None, start: StepTimeParams | None = None,
        load_bound_factor: float = 5.0) -> FitResult:
    from scipy.optimize import least_squares  # lazy: scipy.optimize costs ~0.2 s to import

    t0 = time.perf_counter()
    is_moe = target.is_moe if target is not None else bool(np.any(m.num_experts > 1))
    reject = m.stages.get("reject_s")
    if reject is not None and np.nanmax(reject) > 0:
        reject_max = float(np.nanmax(reject))
    else:
        # Without rejection times, cap rejection at a tenth of the prior's decode step ("smaller
        # still" than the draft term, paper section 4).
        reject_max = 0.1 * _decode_scale(m, hw, tp, target, draft)
    has_draft = _has_draft(m, draft)
    lower, upper = paper_bounds(target, hw, tp, draft, has_draft, is_moe, reject_max, load_bound_factor)
    start = start or _starting_point(m, hw, tp, target, draft)
    problem = _Problem(m, ctx, start, lower, upper)
    if len(m) < len(problem.names):
        raise TooFewPoints(
            f"{len(m)} measurements cannot determine {len(problem.names)} free parameters; need at least {len(problem.names)}"
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = least_squares(problem.residuals, problem.x0, jac=problem.jacobian, bounds=(problem.lo, problem.hi), method="trf",
                            x_scale=1.0, ftol=1e-6, xtol=1e-6, max_nfev=400 * len(problem.names))
    params = problem.params(res.x)
    sp, _ = predicted_speedup(params, ctx, m)
    return FitResult(
        params=params,
        free=problem.names,
        residual_pct=100.0 * (sp / m.speedup - 1.0),
        rmse_speedup=float(np.sqrt(np.mean((sp - m.speedup) ** 2))),
        n_points=len(m),
        elapsed_s=time.perf_counter() - t0,
        converged=bool(res.success),
        message=f"{res.message} ({res.nfev} evaluations)",
    )


def _decode_scale(m: Measurements, hw: Hardware, tp: int, target: ArchSpec | None, draft: ArchSpec | None) -> float:
    decode = m.stages.get("target_decode_s")
    if decode is not None:
        return float(np.nanmax(decode))
    p = _starting_point(m, hw, tp, target, draft)
    return p.bias_s + p.k2_s * float(np.max(m.experts_per_token))


def batch_size_folds(batch_sizes: np.ndarray, max_folds: int = 10) -> list[np.ndarray]:
    """Leave-batch-size-out folds: each distinct batch size lands whole in one fold."""
    unique = np.unique(batch_sizes)
    n = min(max_folds, unique.size)
    return [np.isin(batch_sizes, unique[i::n]) for i in range(n)]


def held_out_error(m: Measurements, hw: Hardware, ctx: StepContext, tp: int = 1, target: ArchSpec | None = None,
                   draft: ArchSpec | None = None, max_folds: int = 10, load_bound_factor: float = 5.0) -> dict:
    """Leave-batch-size-out cross-validation of the speedup, in absolute percent error."""
    errors, folds_used = [], 0
    n_free = None
    for mask in batch_size_folds(m.batch_size, max_folds):
        train = np.flatnonzero(~mask)
        if train.size == 0 or not mask.any():
            continue
        try:
            result = fit(m.subset(train), hw, ctx, tp, target, draft, load_bound_factor=load_bound_factor)
        except MoesdError:
            continue  # too few training points in this fold
        n_free = len(result.free)
        held = m.subset(np.flatnonzero(mask))
        sp, _ = predicted_speedup(result.params, ctx, held)
        errors.append(np.abs(100.0 * (sp / held.speedup - 1.0)))
        folds_used += 1
    if not errors:
        return {"method": "leave-batch-size-out", "folds": 0,
                "note": "not enough distinct batch sizes or points to hold any out"}
    err = np.concatenate(errors)
    return {"method": "leave-batch-size-out", "folds": folds_used, "n_free": n_free,
            "median_abs_pct_error": float(np.median(err)), "max_abs_pct_error": float(np.max(err))}


def stride_split(m: Measurements, stride: int, begin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The paper's selection (App. C): sort by K, gamma, B and take every stride-th point."""
    if stride < 2:
        raise MoesdError(f"stride must be >= 2, got {stride}")
    order = np.lexsort((m.batch_size, m.gamma, m.experts_per_token))
    chosen = order[begin::stride]
    rest = np.setdiff1d(order, chosen)
    return chosen, rest


DEFAULT_BYTES_PER_PARAM = 2.0  # bf16, when the target has no parseable config


def fit_context(hw: Hardware, target: ArchSpec | None, verify_convention: str = "engine", routing=None) -> StepContext:
    """The step-time context a fit uses: the hardware's ridge point, the target's bytes per parameter."""
    return StepContext(hw.ridge_point_flops_per_byte, target.bytes_per_param if target else DEFAULT_BYTES_PER_PARAM,
                       verify_convention=verify_convention, routing=routing)


def free_parameter_count(target: ArchSpec | None) -> int:
    """Algorithm 1's free parameters: 10 for an MoE target, 8 for a dense one (no expert-load terms)."""
    return 10 if (target is None or target.is_moe) else 8


def spread_split(m: Measurements, n_fit: int) -> tuple[np.ndarray, np.ndarray]:
    """n_fit points evenly spread over the list sorted by K, gamma, B (the paper's fixed stride, sized to
    n_fit), and the rest."""
    order = np.lexsort((m.batch_size, m.gamma, m.experts_per_token))
    chosen = order[np.unique(np.linspace(0, len(m) - 1, n_fit).round().astype(int))]
    return chosen, np.setdiff1d(order, chosen)


def fit_on_spread(m: Measurements, hw: Hardware, ctx: StepContext, tp: int = 1, target: ArchSpec | None = None,
                  fraction: float = 0.1) -> dict:
    """Fit on about `fraction` of the points (never fewer than the free parameters), error on the rest."""
    n_fit = max(math.ceil(fraction * len(m)), free_parameter_count(target))
    if len(m) <= n_fit:
        return {"points": len(m), "note": "too few points to hold any out"}
    chosen, rest = spread_split(m, n_fit)
    result = fit(m.subset(chosen), hw, ctx, tp, target)
    pred, _ = predicted_speedup(result.params, ctx, m.subset(rest))
    err = np.abs(pred / m.speedup[rest] - 1) * 100
    return {"points": len(m), "fitted": int(chosen.size), "held_out": int(rest.size),
            "median_abs_pct_error": float(np.median(err)), "max_abs_pct_error": float(np.max(err)),
            "measured": m.speedup[rest].tolist(), "predicted": pred.tolist(), "params": result.params.to_dict()}


# What a handful of points can pin, in the order they are freed: per-forward fixed cost of the target,
# the per-round SD cost, one scale on every byte load (achieved bandwidth), the draft's fixed cost.
FEW_POINT_PARAMETERS = ("target_fixed_s", "sd_step_s", "load_scale", "draft_fixed_s")


def fit_few(m: Measurements, hw: Hardware, ctx: StepContext, tp: int, target: ArchSpec, draft: ArchSpec | None = None,
            profile=None) -> FitResult:
    """A fit for 2-5 points (too few for Algorithm 1's 10 parameters): keep the physical prior (with the
    engine profile) and fit only fixed costs and one load scale, as many as the data has equations for
    (each point gives its speedup plus every stage time it carries)."""
    from scipy.optimize import least_squares

    if target is None:
        raise MoesdError(f"{len(m)} measurements are too few for Algorithm 1's parameters; with --target the physical "
                         "prior fills in what they cannot pin")
    t0 = time.perf_counter()
    prior = physical_prior(target, hw, tp, draft, profile=profile)
    equations = len(m) * (1 + sum(1 for c in STAGE_COLUMNS if c in m.stages))
    names = [n for n in FEW_POINT_PARAMETERS if n != "draft_fixed_s" or (draft is not None and _has_draft(m, draft))]
    names = names[: max(1, min(len(names), equations - 1 if equations > 1 else 1))]
    bytes_bias = target.non_expert_bytes / (hw.effective_bandwidth_bytes_per_s * tp)
    draft_bytes = draft.active_bytes_per_token / hw.effective_bandwidth_bytes_per_s if draft is not None else 0.0

    def params_of(x) -> StepTimeParams:
        v = dict(zip(names, x))
        scale = v.get("load_scale", 1.0)
        return StepTimeParams(
            bias_s=prior.bias_s + (scale - 1.0) * bytes_bias + v.get("target_fixed_s", 0.0),
            k1_s=prior.k1_s, k2_s=prior.k2_s * scale, k3_s=prior.k3_s,
            draft_bias_s=prior.draft_bias_s + (scale - 1.0) * draft_bytes + v.get("draft_fixed_s", 0.0),
            draft_k_s=prior.draft_k_s, reject_bias_s=prior.reject_bias_s + v.get("sd_step_s", 0.0),
            reject_k_s=prior.reject_k_s, lam=prior.lam, s=prior.s)

    stage_cols = [c for c in STAGE_COLUMNS if c in m.stages]

    def residuals(x):
        p = params_of(x)
        sp, times = predicted_speedup(p, ctx, m)
        parts = [np.log(np.maximum(sp, _TINY) / m.speedup)]
        for col in stage_cols:
            ok = ~np.isnan(m.stages[col]) & (m.stages[col] > 0)
            parts.append(np.log(np.maximum(times[col][ok], _TINY) / m.stages[col][ok]))
        return np.concatenate(parts)

    scale_ms = max(prior.bias_s, 1e-4)
    x0 = [1.0 if n == "load_scale" else 0.1 * scale_ms for n in names]
    lo = [0.2 if n == "load_scale" else 0.0 for n in names]
    hi = [20.0 if n == "load_scale" else np.inf for n in names]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = least_squares(residuals, x0, bounds=(lo, hi), x_scale=[1.0 if n == "load_scale" else scale_ms
                                                                      for n in names], method="trf")
    params = params_of(res.x)
    sp, _ = predicted_speedup(params, ctx, m)
    return FitResult(params=params, free=tuple(names), residual_pct=100.0 * (sp / m.speedup - 1.0),
                     rmse_speedup=float(np.sqrt(np.mean((sp - m.speedup) ** 2))), n_points=len(m),
                     elapsed_s=time.perf_counter() - t0, converged=bool(res.success),
                     message=f"few-point fit on the physical prior: {res.message} ({res.nfev} evaluations)")
