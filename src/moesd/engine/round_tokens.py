"""What a round of each draft length is expected to commit per row, for `--gamma auto` (engine/adaptive_gamma.py).

It holds the run's acceptance estimates (engine/acceptance_posterior.py: per-position acceptance pooled over the
rows, each request's own offset from the pool) and the share of rounds that came out empty (prompt lookup found
nothing in any row; the engine then decodes), and prices a round of draft length gamma as 1 + sum_{i < gamma} p_i
tokens per row, an empty round as one. The policy asks for the same prices many times between two rounds (every
draft length, the probe's optimistic lengths, a static batch's plans), and they change only when a round's outcome
arrives, so they are kept until then.
"""

from __future__ import annotations

import numpy as np

from moesd.engine.acceptance_posterior import PositionAcceptance, RequestAcceptance


class RoundTokens:
    """One run's acceptance estimates and the expected tokens per row they give, per draft length."""

    def __init__(self, max_gamma: int) -> None:
        self.max_gamma = max_gamma
        self.acceptance, self.requests = PositionAcceptance(max_gamma), RequestAcceptance()
        self.empty_rounds = self.rounds_asked = 0  # rounds in which no row had a draft / all rounds asked for
        self._version, self._cache = 0, None  # bumped by every acceptance outcome; the prices kept for it

    @property
    def empty_fraction(self) -> float:
        """The share of rounds asked for in which no row had a draft (prompt lookup found nothing), which the
        engine runs as plain decode steps; 0 until one has happened."""
        return self.empty_rounds / (self.rounds_asked + 1) if self.empty_rounds else 0.0

    def per_row(self, top: int, rows, optimism: float = 0.0, variance: bool = False) \
            -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Expected tokens per row for draft lengths 0..top ([rows, top + 1]), their mean over the rows, and, with
        `variance` (the finish objective's draws), their variance from the rows' estimates (else None). `optimism`:
        the acceptance's exploration bonus (PositionAcceptance.per_position), for a probe's length."""
        empty = self.empty_fraction
        version = (self._version, tuple(rows) if rows else None, id(self.requests.spread), empty, variance)
        if self._cache is None or self._cache[0] != version:
            alpha = self.acceptance.alpha
            ratios = self.requests.ratios(rows, alpha) if rows else np.ones(1)
            ratio_var = self.requests.ratio_variances(rows, alpha) if rows and variance else None
            self._cache = (version, ratios, ratio_var, {})
        _, ratios, ratio_var, by_key = self._cache
        if (top, optimism) not in by_key:
            per_position = self.acceptance.per_position(top, optimism=optimism)
            per_row = self.requests.row_tokens(per_position, ratios)
            per_row_var = None if ratio_var is None else \
                self.requests.row_tokens_variance(per_position, ratios, ratio_var) * (1.0 - empty) ** 2
            if empty:  # an empty round is a decode step: one token per row
                per_row[:, 1:] = empty + (1.0 - empty) * per_row[:, 1:]
            by_key[(top, optimism)] = (per_row, per_row.mean(axis=0), per_row_var)
        return by_key[(top, optimism)]

    def record_round(self, accepted: list[int], drafted: list[int], rows: list[int] | None = None) -> None:
        """A round's outcome: the draft tokens each row accepted of those it drafted (`rows`: their request ids)."""
        self.rounds_asked += 1
        self._version += 1
        self.acceptance.record(accepted, drafted)
        if rows is not None:
            self.requests.record(rows, accepted, drafted)

    def record_empty(self) -> None:
        """A round was asked for and no row had a draft."""
        self.empty_rounds += 1
        self.rounds_asked += 1

    def carry(self, earlier: "RoundTokens", weight: float, over_requests: bool = False) -> dict:
        """Start from an earlier run's acceptance as a prior (AdaptiveGamma.carry_acceptance; `over_requests`: its
        centres means over requests, PositionAcceptance.carry); returns what was carried, for the run's summary."""
        self._version += 1
        # The requests behind its rounds (a run given no request ids counts as one).
        requests = max(1, len(earlier.requests.started)) if over_requests else None
        self.acceptance.carry(earlier.acceptance, weight, requests)
        self.requests.carry(earlier.requests, earlier.acceptance.alpha)
        spread = self.requests.spread_ratios(self.acceptance.alpha)
        return {"alpha": self.acceptance.alpha, "per_position": self.acceptance.per_position(self.max_gamma),
                "request_spread": [float(np.min(spread)), float(np.median(spread)), float(np.max(spread))]
                if spread.size else None}
