"""Mean acceptance length per draft length, as serving engines and draft-model cards publish it.

Real drafts are not i.i.d. per position: the i-th draft token is accepted less often than the first. A
curve carries that. Accepted JSON forms:

    {"mean_acceptance_length": {"1": 1.8, "2": 2.3, "3": 2.6}}          (bonus token included)
    {"points": [[1, 1.8], [2, 2.3], [3, 2.6]]}
    {"per_position_acceptance": [0.8, 0.5, 0.3]}                        (vLLM's per-position rates:
                                                                          MAL(gamma) = 1 + sum of the first gamma)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from moesd.errors import MoesdError
from moesd.jsonl import read_json


@dataclass(frozen=True)
class AcceptanceCurve:
    mean_acceptance_length: dict[int, float]  # gamma -> tokens per round, bonus included
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or "acceptance curve"
        if not self.mean_acceptance_length:
            raise MoesdError(f"{where}: no points")
        prev_g, prev_m = 0, 1.0
        for g, m in sorted(self.mean_acceptance_length.items()):
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise MoesdError(f"{where}: gamma must be an integer >= 1, got {g!r}")
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
                raise MoesdError(f"{where}: mean acceptance length at gamma {g} must be a finite number, got {m!r}")
            if not 1.0 <= m <= g + 1:
                raise MoesdError(f"{where}: mean acceptance length at gamma {g} must lie in [1, {g + 1}], got {m}")
            if m < prev_m - 1e-9 or m > prev_m + (g - prev_g) + 1e-9:
                raise MoesdError(f"{where}: a longer draft cannot lose accepted tokens or gain more than one per "
                                 f"position (gamma {prev_g} -> {g}: {prev_m} -> {m})")
            prev_g, prev_m = g, m

    @property
    def gammas(self) -> list[int]:
        return sorted(self.mean_acceptance_length)

    def sigma(self, gamma: int) -> float:
        if gamma not in self.mean_acceptance_length:
            raise MoesdError(f"the acceptance curve has no point at gamma {gamma} (it has {self.gammas})")
        return self.mean_acceptance_length[gamma] / (gamma + 1)

    @classmethod
    def from_dict(cls, data, source: str = "") -> "AcceptanceCurve":
        where = source or "acceptance curve"
        if not isinstance(data, dict):
            raise MoesdError(f"{where}: expected a JSON object")
        try:
            if "per_position_acceptance" in data:
                rates = [float(x) for x in data["per_position_acceptance"]]
                if any(not (math.isfinite(r) and 0 <= r <= 1) for r in rates):
                    raise MoesdError(f"{where}: per-position acceptance must lie in [0, 1]")
                points = {g: 1.0 + sum(rates[:g]) for g in range(1, len(rates) + 1)}
            elif "mean_acceptance_length" in data:
                points = {int(g): m for g, m in dict(data["mean_acceptance_length"]).items()}
            elif "points" in data:
                points = {int(g): m for g, m in data["points"]}
            else:
                raise MoesdError(f"{where}: needs 'mean_acceptance_length', 'points' or 'per_position_acceptance'")
        except (TypeError, ValueError) as exc:
            raise MoesdError(f"{where}: malformed acceptance curve ({exc})") from None
        return cls(points, source)

    @classmethod
    def from_file(cls, path: str | Path) -> "AcceptanceCurve":
        return cls.from_dict(read_json(path, "acceptance curve"), str(path))
