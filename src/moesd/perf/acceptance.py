"""Acceptance quantities and the project's glossary of speculative-decoding (SD) terms.

Glossary (used with exactly these meanings everywhere in moesd):

- **gamma** (``gamma``): draft length, the number of tokens the draft proposes per round.
- **alpha** (``alpha``): the probability that the target accepts the next draft token given the
  prefix (Leviathan et al., arXiv 2211.17192; MoESD Eq. 5). Measured as
  accepted / (accepted + rejections): each evaluated draft token is accepted or is the one rejection
  that ends its round.
- **acceptance rate** (``acceptance_rate``): vLLM's accepted draft tokens / proposed draft tokens.
  Tokens after a rejection are never evaluated, so under i.i.d. acceptance it is
  alpha (1 - alpha^gamma) / ((1 - alpha) gamma), below alpha.
- **sigma** (``sigma``): tokens actually produced per round divided by the maximum gamma + 1
  (MoESD Eq. 5; vLLM V0 called it "system efficiency"). Not the same as alpha.
- **mean acceptance length**: tokens produced per round *counting the bonus token*,
  1 + accepted / drafts (vLLM's convention), so it lies in [1, gamma + 1] and equals
  sigma * (gamma + 1).
- **target efficiency**: T_T(B, 1) / T_T(B, verify), the target's single-token step time over its
  verify step time at the same batch size B (MoESD section 4). 1 is ideal; a compute-bound target
  tends to 1 / (number of verify tokens per sequence).
"""

from __future__ import annotations

import numpy as np

from moesd.errors import MoesdError


def check_alpha(alpha: float) -> float:
    if not np.isfinite(alpha) or not 0.0 <= alpha < 1.0:
        raise MoesdError(f"alpha must lie in [0, 1), got {alpha}")
    return float(alpha)


def check_sigma(sigma: float) -> float:
    if not np.isfinite(sigma) or not 0.0 < sigma <= 1.0:
        raise MoesdError(f"sigma must lie in (0, 1], got {sigma}")
    return float(sigma)


def mean_acceptance_length(alpha, gamma):
    """Expected tokens per round including the bonus token, (1 - alpha^(gamma+1)) / (1 - alpha).

    Leviathan et al. Eq. 1 under i.i.d. acceptance; alpha -> 1 gives gamma + 1.
    """
    alpha = np.asarray(alpha, dtype=float)
    gamma = np.asarray(gamma, dtype=float)
    # The closed form is 0/0 at alpha = 1; the geometric sum is its continuous extension.
    with np.errstate(divide="ignore", invalid="ignore"):
        closed = (1.0 - alpha ** (gamma + 1.0)) / (1.0 - alpha)
    return np.where(alpha >= 1.0, gamma + 1.0, closed)


def sigma_from_alpha(alpha, gamma):
    """MoESD Eq. 5: sigma = mean acceptance length / (gamma + 1)."""
    return mean_acceptance_length(alpha, gamma) / (np.asarray(gamma, dtype=float) + 1.0)


def alpha_from_sigma(sigma: float, gamma: int) -> float:
    """Invert Eq. 5 for one (sigma, gamma): sigma is strictly increasing in alpha on [0, 1)."""
    check_sigma(sigma)
    lowest = 1.0 / (gamma + 1.0)  # alpha = 0 still yields the bonus token
    if sigma <= lowest:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if sigma_from_alpha(mid, gamma) < sigma:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def acceptance_rate_from_alpha(alpha, gamma):
    """vLLM's accepted / draft tokens under i.i.d. acceptance: alpha (1 - alpha^gamma) / ((1 - alpha) gamma)."""
    return (mean_acceptance_length(alpha, gamma) - 1.0) / np.asarray(gamma, dtype=float)


def _invert(fn, target: float, what: str) -> float:
    """alpha in [0, 1) with fn(alpha) = target, fn strictly increasing (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    alpha = 0.5 * (lo + hi)
    if alpha >= 1.0 - 1e-12:
        raise MoesdError(f"{what} {target} needs alpha = 1 (every draft accepted): not a finite prediction")
    return alpha


def alpha_from_acceptance_rate(rate: float, gamma: int) -> float:
    """Invert vLLM's acceptance rate at draft length gamma (e.g. 0.55 at gamma 4 -> alpha ~0.78)."""
    if not np.isfinite(rate) or not 0.0 <= rate < 1.0:
        raise MoesdError(f"acceptance rate must lie in [0, 1), got {rate}")
    return 0.0 if rate == 0 else _invert(lambda a: float(acceptance_rate_from_alpha(a, gamma)), rate,
                                         "acceptance rate")


def alpha_from_mean_acceptance_length(mal: float, gamma: int) -> float:
    """Invert the mean acceptance length (bonus token included) at draft length gamma."""
    if not np.isfinite(mal) or not 1.0 <= mal < gamma + 1:
        raise MoesdError(f"mean acceptance length at gamma {gamma} must lie in [1, {gamma + 1}), got {mal}")
    return 0.0 if mal == 1 else _invert(lambda a: float(mean_acceptance_length(a, gamma)), mal,
                                        "mean acceptance length")
