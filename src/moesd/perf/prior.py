"""The physical prior of Algorithm 1's parameters, and the fit bounds, from bytes, FLOPs and hardware.

Before any measurement each parameter gets the value the roofline implies:

- bias = non-expert bytes / target bandwidth; k2 = bytes of one expert (all MoE layers) / target
  bandwidth; draft_bias = draft bytes / one device's bandwidth. These are the paper's lower
  bounds (App. C.2) and the fit searches [x, 5x] around them.
- The knee of G sits at lambda*RP*b/2 tokens. Above it, time must grow at the compute slope,
  2 * weights / FLOP/s per token, so k*ln(s) equals that slope. Below it, G rises exponentially;
  we choose s so that the roofline term is SOFT_KNEE_FRACTION of its slope-times-knee at the knee,
  i.e. ln(s) = 1 / (SOFT_KNEE_FRACTION * knee): a smooth roofline corner that is negligible far
  below the knee (e^-4 = 1.8 % of the knee value at t = 0).
- k3 uses the compute slope of all E experts per unit of tokens-per-expert (by the time experts
  are compute-bound, all of them are loaded).
- Rejection sampling reads target and draft probabilities (2 x fp32 x vocab) for the gamma+1 = 5
  positions the paper's largest gamma verifies, per sequence, on one device.

Without an execution profile the prior is a roofline bound: it ignores kernel launch and framework
overheads and communication, so its speedups are optimistic. A profile (perf/profiles.py) adds the
fixed costs a given engine pays; fitting to measurements refines both.
"""

from __future__ import annotations

import math

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.architecture import ArchSpec
from moesd.perf.hardware import Hardware
from moesd.perf.profiles import ExecutionProfile
from moesd.perf.roofline import knee_tokens
from moesd.perf.step_time import StepTimeParams

SOFT_KNEE_FRACTION = 0.25
_REJECT_POSITIONS = 5
_FP32_BYTES = 4


def check_parallelism(tp: int, ep: int) -> None:
    if tp < 1:
        raise MoesdError(f"tensor-parallel degree must be >= 1, got {tp}")
    if ep < 1 or tp % ep:
        raise MoesdError(f"expert-parallel degree {ep} must be >= 1 and divide the tensor-parallel degree {tp}")


def prior_lambda(hw: Hardware) -> float:
    """Empirical / theoretical ridge point implied by the efficiencies, within the paper's [0.2, 1]."""
    return float(np.clip(hw.flops_efficiency / hw.bandwidth_efficiency, 0.2, 1.0))


def physical_prior(target: ArchSpec, hw: Hardware, tp: int = 1, draft: ArchSpec | None = None,
                   ep: int = 1, profile: ExecutionProfile | None = None) -> StepTimeParams:
    """`profile` adds an engine's fixed costs (perf/profiles.py) to the bias terms; None: roofline only."""
    check_parallelism(tp, ep)
    target_bw = hw.effective_bandwidth_bytes_per_s * tp
    target_flops = hw.effective_flops_per_s * tp
    lam = prior_lambda(hw)
    knee = knee_tokens(lam, hw.ridge_point_flops_per_byte, target.bytes_per_param)
    log_s = min(math.log(2.0), 1.0 / (SOFT_KNEE_FRACTION * knee))

    def knee_coefficient(slope_s_per_token: float) -> float:
        return slope_s_per_token / log_s

    dense_slope = 2.0 * target.dense_matmul_params / target_flops
    expert_slope = 2.0 * target.params_per_expert * target.num_moe_layers * target.num_experts / target_flops
    if draft is not None:
        draft_bias = draft.active_bytes_per_token / hw.effective_bandwidth_bytes_per_s
        draft_k = knee_coefficient(2.0 * draft.active_params_excl_input_embedding / hw.effective_flops_per_s)
    else:
        draft_bias = draft_k = 0.0  # prompt lookup / n-gram drafting: no model to run
    target_fixed = draft_fixed = sd_fixed = 0.0
    if profile is not None:
        target_fixed = profile.target_fixed_s(target.num_layers, target.num_moe_layers if target.is_moe else 0, tp)
        if draft is not None:
            draft_fixed = profile.draft_fixed_s(draft.num_layers, draft.num_moe_layers if draft.is_moe else 0)
        sd_fixed = profile.sd_step_s
    return StepTimeParams(
        bias_s=target.non_expert_bytes / target_bw + target_fixed,
        k1_s=knee_coefficient(dense_slope),
        k2_s=target.expert_bytes / target_bw if target.is_moe else 0.0,
        k3_s=knee_coefficient(expert_slope) if target.is_moe else 0.0,
        draft_bias_s=draft_bias + draft_fixed,
        draft_k_s=draft_k,
        reject_bias_s=sd_fixed,
        reject_k_s=2 * _FP32_BYTES * target.vocab_size * _REJECT_POSITIONS / hw.effective_bandwidth_bytes_per_s,
        lam=lam,
        s=math.exp(log_s),
    )


def paper_bounds(target: ArchSpec | None, hw: Hardware, tp: int, draft: ArchSpec | None,
                 has_draft: bool, is_moe: bool, reject_max_s: float,
                 load_bound_factor: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of App. C.2: loads in [min, factor*min] with min = bytes / peak bandwidth (factor 5).

    Overhead-bound forwards (small drafts, CPU runs) may need a larger factor.

    Without a known architecture the loads are only bounded below by zero. Parameters that cannot
    act (no draft model, a dense target) are pinned to zero.
    """
    inf = np.inf
    peak_target_bw = hw.memory_bandwidth_bytes_per_s * tp
    lower = dict(bias_s=0.0, k1_s=0.0, k2_s=0.0, k3_s=0.0, draft_bias_s=0.0, draft_k_s=0.0,
                 reject_bias_s=0.0, reject_k_s=0.0, lam=0.2, s=1.0)
    upper = dict(bias_s=inf, k1_s=inf, k2_s=inf, k3_s=inf, draft_bias_s=inf, draft_k_s=inf,
                 reject_bias_s=reject_max_s, reject_k_s=reject_max_s, lam=1.0, s=2.0)
    if target is not None:
        lower["bias_s"] = target.non_expert_bytes / peak_target_bw
        upper["bias_s"] = load_bound_factor * lower["bias_s"]
        if target.is_moe:
            lower["k2_s"] = target.expert_bytes / peak_target_bw
            upper["k2_s"] = load_bound_factor * lower["k2_s"]
    if draft is not None:
        lower["draft_bias_s"] = draft.active_bytes_per_token / hw.memory_bandwidth_bytes_per_s
        upper["draft_bias_s"] = load_bound_factor * lower["draft_bias_s"]
    if not has_draft:
        upper["draft_bias_s"] = upper["draft_k_s"] = 0.0
        lower["draft_bias_s"] = 0.0
    if not is_moe:
        for n in ("k2_s", "k3_s"):
            lower[n] = upper[n] = 0.0
    names = StepTimeParams.names()
    return np.array([lower[n] for n in names]), np.array([upper[n] for n in names])
