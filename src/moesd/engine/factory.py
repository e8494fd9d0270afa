"""The one path from names to a ready engine: `moesd generate`, the bench sweep, budget quality runs and
budget calibration all build engines here.

An `EngineSpec` validates itself once, when it is made; `ModelCache` shares loaded models between the
engines of one sweep or calibration (the target is reloaded only when what determines its weights
changes, the draft is loaded once); `build_engine` never mutates an engine afterwards, and each engine
creates a fresh proposer for every `generate` call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from moesd.engine.loading import LoadedModel, load_model
from moesd.engine.options import (DRAFT_METHODS, check_alpha, check_budget, check_gamma, check_routing,
                                  check_sampling)
from moesd.engine.proposers import DraftModelProposer, NgramProposer, SyntheticProposer, check_vocabularies
from moesd.engine.sampling import SamplingParams
from moesd.engine.spec_engine import SpecEngine
from moesd.engine.tokenizer import ByteTokenizer
from moesd.errors import MoesdError


@dataclass(frozen=True)
class EngineSpec:
    target: str
    draft: str | None = None
    draft_method: str | None = None  # default: "model" with a draft, else "none"
    alpha: float | None = None  # synthetic acceptance probability
    gamma: int = 4
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = "bf16"
    experts_per_token: int | None = None
    experts_implementation: str = "grouped_mm"
    routing: str = "model"
    random_weights: bool | None = None
    tokenizer: str | None = None
    upcycle_experts: int | None = None  # a dense target measured as its MoE twin with this many experts
    ngram_min: int = 2
    ngram_max: int = 4
    expert_budget: int | None = None  # MoE-Spec: experts per layer per verify forward
    budget_mode: str = "substitution"
    budget_scope: str = "batch"
    budget_static: str | None = None  # `moesd budget calibrate` output: use its static expert order
    measure_kl: bool = False
    merge_prefill: bool = True  # SD's first verify also prefills the target (off for budget timing)

    def __post_init__(self) -> None:
        method = self.method
        if method not in DRAFT_METHODS:
            raise MoesdError(f"unknown draft method {method!r} (use {', '.join(DRAFT_METHODS)})")
        check_gamma(self.gamma)
        if method == "model" and not self.draft:
            raise MoesdError("draft method 'model' needs --draft")
        if method not in ("model", "synthetic") and self.draft:
            raise MoesdError(f"--draft given but draft method is {method!r}")
        if method == "synthetic":
            check_alpha(self.alpha)
        if method == "none" and self.gamma > 0:
            raise MoesdError("gamma > 0 needs a draft: --draft, --draft-method ngram or --draft-method synthetic")
        check_routing(self.routing)
        check_sampling(self.temperature, self.top_p)
        check_budget(self.expert_budget, self.budget_mode, self.budget_scope)
        if self.expert_budget is None and (self.budget_static or self.measure_kl):
            raise MoesdError("--budget-static and --measure-kl need --expert-budget")
        if self.expert_budget is not None and self.gamma == 0:
            raise MoesdError("an expert budget applies to verification; gamma 0 has none")
        if self.experts_per_token is not None and self.experts_per_token < 1:
            raise MoesdError(f"experts per token must be >= 1, got {self.experts_per_token}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise MoesdError(f"need 1 <= ngram min <= max, got {self.ngram_min}, {self.ngram_max}")

    @property
    def method(self) -> str:
        return self.draft_method or ("model" if self.draft else "none")

    def replace(self, **changes) -> "EngineSpec":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def target_key(self) -> tuple:
        """What determines the target's weights: engines that agree on it share one loaded target."""
        return (self.target, self.dtype, self.device, self.seed, self.experts_per_token, self.experts_implementation,
                self.random_weights, self.tokenizer, self.upcycle_experts)


class ModelCache:
    """Loaded models shared by many engines. One target at a time (the previous one is freed before the
    next is built, so a K sweep never holds two); drafts are keyed by their own source."""

    def __init__(self) -> None:
        self._target_key: tuple | None = None
        self._target: LoadedModel | None = None
        self._drafts: dict[tuple, LoadedModel] = {}

    def target(self, spec: EngineSpec) -> LoadedModel:
        key = spec.target_key()
        if self._target is None or key != self._target_key:
            self._target = None
            if spec.upcycle_experts:
                from moesd.engine.upcycle import upcycle

                dense = load_model(spec.target, dtype=spec.dtype, device=spec.device, seed=spec.seed,
                                   random_weights=spec.random_weights, tokenizer_dir=spec.tokenizer)
                self._target = upcycle(dense, spec.upcycle_experts, spec.experts_per_token or 2, seed=spec.seed,
                                       experts_implementation=spec.experts_implementation)
            else:
                self._target = load_model(spec.target, dtype=spec.dtype, device=spec.device, seed=spec.seed,
                                          random_weights=spec.random_weights,
                                          experts_per_token=spec.experts_per_token,
                                          experts_implementation=spec.experts_implementation,
                                          tokenizer_dir=spec.tokenizer)
            self._target_key = key
        return self._target

    def draft(self, spec: EngineSpec, target: LoadedModel) -> LoadedModel | None:
        if not spec.draft or spec.gamma == 0:
            return None
        key = (spec.draft, spec.dtype, spec.device, spec.seed, spec.random_weights, spec.tokenizer)
        if key not in self._drafts:
            self._drafts[key] = load_draft(spec.draft, target, dtype=spec.dtype, device=spec.device,
                                           seed=spec.seed + 1, random_weights=spec.random_weights,
                                           tokenizer_dir=spec.tokenizer)
        return self._drafts[key]


def build_engine(spec: EngineSpec, models: ModelCache | None = None) -> SpecEngine:
    """A ready engine for `spec`; `engine.target` is the loaded target."""
    models = models or ModelCache()
    target = models.target(spec)
    draft = models.draft(spec, target)
    factory = (lambda seed: make_proposer(spec.method, target, draft, spec.alpha, seed, spec.ngram_min,
                                          spec.ngram_max)) if spec.gamma > 0 else None
    return SpecEngine(target, factory, spec.gamma, SamplingParams(spec.temperature, spec.top_p), spec.seed,
                      spec.routing, budget=make_budget(spec, target), measure_kl=spec.measure_kl,
                      merge_prefill=spec.merge_prefill)


def make_budget(spec: EngineSpec, target: LoadedModel):
    from moesd.engine.expert_budget import ExpertBudget, read_static_order

    if spec.expert_budget is None:
        return None
    if not target.is_moe:
        raise MoesdError(f"{spec.target} is dense: expert budgets need an MoE target")
    order = read_static_order(spec.budget_static) if spec.budget_static else None
    return ExpertBudget(spec.expert_budget, spec.budget_mode, spec.budget_scope,
                        "static" if order is not None else "router", order)


def load_draft(source: str, target: LoadedModel, **load_kw) -> LoadedModel:
    """Load a draft model and refuse it if its tokenizer maps text to other ids than the target's
    (random-weight models both read bytes, so there is nothing to compare)."""
    draft = load_model(source, **load_kw)
    if not (isinstance(target.tokenizer, ByteTokenizer) and isinstance(draft.tokenizer, ByteTokenizer)):
        check_vocabularies(target, draft)
    return draft


def make_proposer(method: str, target: LoadedModel, draft: LoadedModel | None, alpha: float | None, seed: int,
                  ngram_min: int = 2, ngram_max: int = 4):
    """A fresh proposer (no state carried between generations). Synthetic acceptance with a draft
    still runs the draft model, so its cost is real."""
    inner = DraftModelProposer(draft, target.vocab_size) if draft is not None else None
    if method == "model":
        return inner
    if method == "ngram":
        return NgramProposer(target.vocab_size, ngram_min, ngram_max)
    return SyntheticProposer(alpha, target.vocab_size, seed, inner)
