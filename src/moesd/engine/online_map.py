"""One stage's step-time map for `--gamma auto`'s cost model (engine/step_cost_model.py): seconds as a non-negative
combination of feature rows (a per-forward constant, the prior's price, a per-token term), refitted online."""

from __future__ import annotations

from collections import deque
from itertools import combinations

import numpy as np
# Imported with the module, not at the first refit: that import takes up to ~0.9 s here, which a short run would
# otherwise book as decision time (it did: auto at 0.78x its equal, gamma 1, on a 48-token run).
from scipy.optimize import nnls


class OnlineMap:
    """measured ~ w . features, w >= 0, by non-negative least squares on the last `window` observations of each group,
    using as many features as distinct feature rows have been seen (at most `max_features`): with one, only a scale on
    feature 1 (the prior's prediction; the median measured / predicted ratio); with two, the pair with feature 1 that
    fits best, the first pair on ties (the target: a per-forward constant and a scale on the prior, or a scale on the
    prior and a per-token cost, pinned by one decode and one verify size); with three, all. Using what two
    points pin matters: the prior's shape over token counts can be far off either way (a CPU prior prices a 2-token
    verify at ~2 decodes where the machine takes ~1.35 at B = 1; at stdlib B = 64 the prior's expert loading is
    saturated, 128 tokens priced 1.10x 64 where the machine took 1.7x, which no non-negative constant plus scale
    fits, and that fit priced a round at 1.3x a decode step where it measured 1.9x), and a scale alone keeps it.
    The decision runs every step and a refit costs ~0.2 ms of numpy/scipy (what made the in-run decision cost
    0.6-1.7 ms per step before), so the fit is redone after the 1st, 2nd, 4th and 8th observation and then every
    `refit_every`, and at once when a feature row not seen before arrives: that is the first measurement of a
    draft length (or batch size) the policy has just extrapolated to, and the next choice must see it (without
    it, one SmolLM2 run ramped gamma 3 -> 6 at B = 13 on a fit that priced a 91-token verify like a 13-token
    decode, while each longer round measured ~2x a decode)."""

    def __init__(self, window: int, max_features: int, refit_every: int = 8) -> None:
        # The last `window` observations of each group (the target map: decode steps and rounds apart). One
        # window for all let a long run of plain steps push every round out: the map then priced rounds from
        # decode steps alone, on the prior's shape, and a stdlib engine at B = 16 whose two calls before had
        # decoded every step (on predicted 0.81-0.82x) opened its fourth with a round on a predicted 1.08x and ran
        # 0.89x autoregressive decoding (docs/results.md section 15).
        self.window = window
        self.groups: dict = {}
        self.max_features = max_features
        self.refit_every = refit_every
        self._w: np.ndarray | None = None
        self._last_w: np.ndarray | None = None  # the weights before the pending refit (`last_weights`)
        self._since_fit = 0
        self._seen: set = set()  # distinct feature rows (rounded) ever observed
        self.version = 0  # bumped whenever the weights may change: what callers cache their products by

    @property
    def rows(self) -> list:
        return [row for group in self.groups.values() for row in group]

    def add(self, features: tuple, measured: float, group=None) -> None:
        if measured > 0 and features[1] > 0:
            self.groups.setdefault(group, deque(maxlen=self.window)).append((features, measured))
            self._since_fit += 1
            key = tuple(round(f, 12) for f in features)
            new = key not in self._seen
            self._seen.add(key)
            n = sum(len(g) for g in self.groups.values())
            if new or n in (1, 2, 4, 8) or self._since_fit >= self.refit_every:
                self._last_w = self._w if self._w is not None else self._last_w
                self._w = None
                self.version += 1

    def __bool__(self) -> bool:
        return bool(self.groups)

    def weights(self) -> np.ndarray:
        if self._w is None:
            rows = self.rows
            x = np.array([f for f, _ in rows], dtype=float)
            y = np.array([m for _, m in rows], dtype=float)
            w = np.zeros(x.shape[1])
            w[1] = float(np.median(y / x[:, 1]))
            k = min(len(self._seen), self.max_features, x.shape[1])
            if k >= 2:
                norm = x.max(axis=0)
                norm[norm == 0] = 1.0
                best = None
                for cols in combinations(range(x.shape[1]), k):
                    if 1 not in cols:
                        continue
                    fitted, residual = nnls(x[:, cols] / norm[list(cols)], y)
                    if np.any(fitted > 0) and (best is None or residual < best[0] * (1 - 1e-6) - 1e-12):
                        best = (residual, cols, fitted)
                if best is not None:
                    w = np.zeros(x.shape[1])
                    w[list(best[1])] = best[2] / norm[list(best[1])]
            self._w = w
            self._since_fit = 0
        return self._w

    def __call__(self, features: tuple) -> float:
        return float(np.dot(self.weights(), features))

    def last_weights(self) -> np.ndarray:
        """The weights of the last fit, without the refit that may be pending (which costs ~0.2 ms) unless it is
        `2 refit_every` observations old (nothing priced in between: a run of held decisions)."""
        if self._w is None and (self._last_w is None or self._since_fit >= 2 * self.refit_every):
            return self.weights()
        return self._w if self._w is not None else self._last_w
