"""One call from names to a ready engine: what `moesd generate` and the bench harness use."""

from __future__ import annotations

from dataclasses import dataclass

from moesd.engine.loading import LoadedModel, load_model
from moesd.engine.proposers import DraftModelProposer, NgramProposer, SyntheticProposer, check_vocabularies
from moesd.engine.sampling import SamplingParams
from moesd.engine.spec_engine import MAX_GAMMA, SpecEngine
from moesd.engine.tokenizer import ByteTokenizer
from moesd.errors import MoesdError

DRAFT_METHODS = ("model", "ngram", "synthetic", "none")


@dataclass
class EngineSpec:
    target: str
    draft: str | None = None
    draft_method: str | None = None  # default: "model" with --draft, else "none"
    alpha: float | None = None  # synthetic acceptance rate
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
    ngram_min: int = 2
    ngram_max: int = 4
    expert_budget: int | None = None  # MoE-Spec: experts per layer per verify forward
    budget_mode: str = "substitution"
    budget_scope: str = "batch"
    budget_static: str | None = None  # `moesd budget calibrate` output: use its static expert order
    measure_kl: bool = False


def build_engine(spec: EngineSpec, target: LoadedModel | None = None) -> tuple[SpecEngine, LoadedModel]:
    """Validates everything cheap before loading anything heavy."""
    method = spec.draft_method or ("model" if spec.draft else "none")
    if method not in DRAFT_METHODS:
        raise MoesdError(f"unknown draft method {method!r} (use {', '.join(DRAFT_METHODS)})")
    if not 0 <= spec.gamma <= MAX_GAMMA:
        raise MoesdError(f"gamma must lie in 0..{MAX_GAMMA}, got {spec.gamma}")
    if method == "model" and not spec.draft:
        raise MoesdError("draft method 'model' needs --draft")
    if method not in ("model", "synthetic") and spec.draft:
        raise MoesdError(f"--draft given but draft method is {method!r}")
    if method == "synthetic" and (spec.alpha is None or not 0 <= spec.alpha <= 1):
        raise MoesdError("synthetic drafting needs --alpha in [0, 1]")
    if method == "none" and spec.gamma > 0:
        raise MoesdError("gamma > 0 needs a draft: --draft, --draft-method ngram or --draft-method synthetic")
    if spec.routing not in ("model", "uniform"):
        raise MoesdError(f"routing must be 'model' or 'uniform', got {spec.routing!r}")
    if spec.temperature < 0 or not 0 < spec.top_p <= 1:
        raise MoesdError("temperature must be >= 0 and top_p in (0, 1]")
    target = target or load_model(spec.target, dtype=spec.dtype, device=spec.device, seed=spec.seed,
                                  random_weights=spec.random_weights, experts_per_token=spec.experts_per_token,
                                  experts_implementation=spec.experts_implementation, tokenizer_dir=spec.tokenizer)
    proposer = None
    if spec.gamma > 0:
        draft = None
        if spec.draft:
            draft = load_draft(spec.draft, target, dtype=spec.dtype, device=spec.device, seed=spec.seed + 1,
                               random_weights=spec.random_weights, tokenizer_dir=spec.tokenizer)
        proposer = make_proposer(method, target, draft, spec.alpha, spec.seed, spec.ngram_min, spec.ngram_max)
    engine = SpecEngine(target, proposer, spec.gamma, SamplingParams(spec.temperature, spec.top_p), spec.seed,
                        spec.routing, budget=make_budget(spec), measure_kl=spec.measure_kl)
    return engine, target


def make_budget(spec: EngineSpec):
    from moesd.engine.expert_budget import ExpertBudget, read_static_order

    if spec.expert_budget is None:
        if spec.budget_static or spec.measure_kl:
            raise MoesdError("--budget-static and --measure-kl need --expert-budget")
        return None
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
