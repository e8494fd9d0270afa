"""What one `SpecEngine.generate` call returns (engine/spec_engine.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moesd.engine.metrics import ExpertStats
from moesd.perf.acceptance_counts import AcceptanceCounts


@dataclass
class GenerationResult:
    """One `generate` call. Typed fields are what callers compute with (counts, not rates); `metrics` is
    the JSON form `moesd generate --json` prints, built from the same run."""

    token_ids: list[list[int]]  # generated tokens per prompt, prompt excluded
    finish_reasons: list[str]  # "eos" | "length"
    metrics: dict
    gamma: int = 0
    acceptance: AcceptanceCounts | None = None  # None for the autoregressive baseline (gamma 0)
    experts: ExpertStats | None = None  # None for dense targets
    kl_per_token: torch.Tensor | None = None  # with measure_kl: KL(full || budgeted) of every verify token

    @property
    def stages(self) -> dict:
        return self.metrics["stages"]

    @property
    def seconds_per_token(self) -> float:
        """Wall time per generated token, prefill included (SD merges the target prefill into its first round)."""
        return self.stages["generation_s"] / max(self.stages["tokens"], 1)
