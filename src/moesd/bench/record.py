"""The `moesd bench` JSONL record: one measured point. This module owns the schema; the sweep writes
records only through `BenchRecord.to_dict`, and `report`, `fit` and the benchmarks read them only
through `read_bench_records` / `BenchRecord.from_dict`.

Since this type exists every record also carries the acceptance *counts* (rates are derived from them,
perf/acceptance_counts.py), `target_efficiency` = T_T(B,1) / T_T(B,verify) and `draft_cost_ratio` =
gamma T_D(B,1) / T_T(B,1), the two factors of MoESD Eq. 4 besides the mean acceptance length. Older files
lack them; reading fills the derivable ones, and a record read from a file is written back unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from moesd.errors import MoesdError
from moesd.jsonl import read_jsonl
from moesd.perf.acceptance_counts import AcceptanceCounts

SCHEMA = "moesd.bench/1"
# What `report` needs of every point; `fit` needs a subset (perf/measurements.py).
REQUIRED = ("batch_size", "gamma", "speedup", "target_decode_s", "target_verify_s", "alpha", "sigma", "num_experts",
            "experts_per_token", "target")
_NUMBERS = ("batch_size", "gamma", "speedup", "target_decode_s", "target_verify_s", "alpha", "sigma", "num_experts",
            "experts_per_token")


@dataclass
class BenchRecord:
    # identity and coordinates
    target: str
    batch_size: int
    gamma: int
    experts_per_token: int
    num_experts: int
    key: str | None = None
    schema: str = SCHEMA
    draft: str | None = None
    draft_method: str | None = None
    hardware: str | None = None
    tp: int = 1
    temperature: float = 0.0
    routing: str | None = None  # None for dense targets
    expert_budget: int | None = None
    synthetic_alpha: float | None = None
    # speed
    speedup: float = 0.0
    speedup_iqr: list | None = None
    ar_tokens_per_s: float | None = None
    sd_tokens_per_s: float | None = None
    # acceptance (glossary names; derived from the counts below when those are present)
    alpha: float = 0.0
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None
    sigma: float = 0.0
    per_position_acceptance: list | None = None
    num_drafts: int | None = None
    num_draft_tokens: int | None = None
    num_accepted_tokens: int | None = None
    num_rejections: int | None = None
    accepted_per_position: list | None = None
    # Eq. 4's factors
    target_efficiency: float | None = None
    draft_cost_ratio: float | None = None
    # stage medians (seconds) and IQRs
    target_decode_s: float = 0.0
    target_decode_s_iqr: list | None = None
    target_verify_s: float = 0.0
    target_verify_s_iqr: list | None = None
    draft_s: float | None = None  # one draft token, T_D(B, 1)
    draft_s_iqr: list | None = None
    reject_s: float | None = None
    reject_s_iqr: list | None = None
    outside_forward_fraction: float | None = None
    # experts
    active_experts_decode: float | None = None
    active_experts_verify: float | None = None
    routing_curve: list | None = None
    # provenance and budgets
    conditions: dict = field(default_factory=dict)
    budget_mode: str | None = None
    budget_scope: str | None = None
    quality: dict | None = None
    # `--gammas ...,auto`: gamma is the maximum the engine could choose; what it chose
    gamma_policy: str | None = None  # "auto"; None for a fixed gamma
    gamma_histogram: dict | None = None
    mean_gamma: float | None = None
    decision_us_per_step: float | None = None
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were
    source: str = ""  # file:line it was read from (never written)
    _raw: dict | None = field(default=None, repr=False)  # the line as read, so rewriting keeps it byte-identical

    def __post_init__(self) -> None:
        if self.target_efficiency is None and self.target_decode_s and self.target_verify_s:
            self.target_efficiency = self.target_decode_s / self.target_verify_s
        if self.draft_cost_ratio is None and self.draft_s is not None and self.target_decode_s:
            self.draft_cost_ratio = self.gamma * self.draft_s / self.target_decode_s

    @property
    def acceptance(self) -> AcceptanceCounts | None:
        if self.num_drafts is None:
            return None
        return AcceptanceCounts(self.num_drafts, self.num_draft_tokens or 0, self.num_accepted_tokens or 0,
                                self.num_rejections or 0, list(self.accepted_per_position or []))

    @property
    def gamma_label(self):
        """What a report calls the point's draft length: "auto" for the adaptive series."""
        return "auto" if self.gamma_policy == "auto" else self.gamma

    @property
    def is_moe(self) -> bool:
        return self.routing is not None

    @property
    def budgeted(self) -> bool:
        return self.quality is not None

    def experts_at(self, phase: str) -> float | None:
        """Distinct experts per layer at the point's own token count (B for decode, B (gamma+1) for verify).

        The routing curve averages forwards by token count; later forwards of a run may have fewer rows, so
        a plain average over a phase would mix batch sizes."""
        if phase == "verify" and self.gamma_policy == "auto":
            return None  # verify forwards of the auto series have every gamma it chose
        tokens = self.batch_size * (self.gamma + 1 if phase == "verify" else 1)
        for t, d in self.routing_curve or []:
            if int(t) == tokens:
                return float(d)
        return getattr(self, f"active_experts_{phase}")

    def to_dict(self) -> dict:
        if self._raw is not None:
            return self._raw
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "source", "_raw"):
                continue
            value = getattr(self, f.name)
            if f.name in ("budget_mode", "budget_scope", "quality", "gamma_policy", "gamma_histogram", "mean_gamma",
                          "decision_us_per_step") and value is None:
                continue  # only budget sweeps / the auto series carry these
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "BenchRecord":
        if not isinstance(d, dict):
            raise MoesdError(f"{where}: not a JSON object")
        missing = [k for k in REQUIRED if d.get(k) is None]
        if missing:
            raise MoesdError(f"{where}: record lacks {missing}: not `moesd bench` output")
        for k in _NUMBERS:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise MoesdError(f"{where}: {k} must be a finite number, got {v!r}")
        if d["target_decode_s"] <= 0 or d["target_verify_s"] <= 0 or d["speedup"] <= 0:
            raise MoesdError(f"{where}: speedup and stage times must be > 0")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "source", "_raw"}
        known = {k: v for k, v in d.items() if k in names}
        try:
            rec = cls(**known, extra={k: v for k, v in d.items() if k not in names}, source=where)
        except TypeError as exc:
            raise MoesdError(f"{where}: malformed record ({exc})") from None
        rec.target = str(rec.target)
        rec._raw = d
        return rec


def read_bench_records(path: str | Path, skip_bad_lines: bool = False, skipped: list[int] | None = None) -> list[BenchRecord]:
    """Every record of a results file, validated; `skipped` collects the corrupt lines' numbers."""
    return [BenchRecord.from_dict(rec, f"{path}:{i}") for i, rec in read_jsonl(path, skip_bad_lines, skipped)]
