"""The one path from names to a ready engine: `moesd generate`, the bench sweep, budget quality runs and
budget calibration all build engines here.

An `EngineSpec` validates itself once, when it is made; `ModelCache` shares loaded models between the
engines of one sweep or calibration (the target is reloaded only when what determines its weights
changes, the draft is loaded once); `build_engine` never mutates an engine afterwards, and each engine
creates a fresh proposer for every `generate` call.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

from moesd.engine.loading import LoadedModel, load_model
from moesd.engine.options import (DRAFT_METHODS, check_alpha, check_budget, check_gamma, check_kv_cache,
                                  check_routing, check_sampling)
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
    alpha_max: float | None = None  # synthetic: each request's alpha uniform in [alpha, alpha_max]
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
    adaptive_gamma: bool = False  # `--gamma auto`: gamma is then the largest draft length the policy may pick
    cost_params: str | None = None  # `moesd fit` output pricing the steps of --gamma auto (default: the prior)
    hardware: str | None = None  # hardware of the prior for --gamma auto (default: cpu, or the GPU's preset)
    kv_cache: str = "static"  # engine/static_kv.py: "static" or "ragged"
    cuda_graphs: bool = False  # engine/cuda_graphs.py: capture decode / verify / draft forwards (CUDA only)
    # Python API: keyword arguments of --gamma auto's policy (engine/adaptive_gamma.py: margin, probe_budget, ...) as
    # (name, value) pairs, or a dict; what benchmarks/adaptive_gamma_diagnose.py --variant compares side by side.
    gamma_policy_options: tuple = ()

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
        if self.alpha_max is not None:
            if method != "synthetic":
                raise MoesdError("--alpha-max spreads synthetic acceptance; it needs --draft-method synthetic")
            check_alpha(self.alpha_max)
            if self.alpha_max < self.alpha:
                raise MoesdError(f"--alpha-max {self.alpha_max} is below --alpha {self.alpha}")
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
        if isinstance(self.gamma_policy_options, dict):
            object.__setattr__(self, "gamma_policy_options", tuple(sorted(self.gamma_policy_options.items())))
        if self.gamma_policy_options and not self.adaptive_gamma:
            raise MoesdError("gamma policy options tune --gamma auto; give --gamma auto")
        if self.adaptive_gamma:
            if self.gamma < 1:
                raise MoesdError(f"--gamma auto needs a maximum draft length >= 1 (--max-gamma), got {self.gamma}")
            if self.expert_budget is not None:
                raise MoesdError("--gamma auto prices lossless rounds; it does not combine with --expert-budget")
        elif self.cost_params or self.hardware:
            raise MoesdError("--params and --hardware price the steps of --gamma auto; give --gamma auto")
        check_kv_cache(self.kv_cache)
        if self.cuda_graphs and (self.device != "cuda" or self.kv_cache != "static"):
            raise MoesdError("--cuda-graphs needs --device cuda and the static KV cache")

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
                                          spec.ngram_max, spec.alpha_max, spec.kv_cache)) if spec.gamma > 0 else None
    policy = make_gamma_policy(spec, target, draft) if spec.adaptive_gamma else None
    return SpecEngine(target, factory, spec.gamma, SamplingParams(spec.temperature, spec.top_p), spec.seed,
                      spec.routing, budget=make_budget(spec, target), measure_kl=spec.measure_kl,
                      merge_prefill=spec.merge_prefill, gamma_policy=policy, kv_cache=spec.kv_cache,
                      cuda_graphs=spec.cuda_graphs)


# `--gamma auto` options that configure the engine's cost model (StepCostModel), with their defaults.
COST_OPTIONS = {"local_residual": True, "anchored_index": False, "shared_correction": False}


def make_gamma_policy(spec: EngineSpec, target: LoadedModel, draft: LoadedModel | None):
    """The engine's `GammaPolicies` (a fresh `AdaptiveGamma` per generate call, sharing one `StepCostModel`) pricing
    steps with the perf model:
    `spec.cost_params` (a `moesd fit` output) or the physical prior of this target and draft on `spec.hardware`
    (default: the cpu preset, or the GPU's preset) with that hardware's engine profile."""
    import torch

    from moesd.engine.adaptive_gamma import AdaptiveGamma, StepCostModel
    from moesd.perf.fit import fit_context
    from moesd.perf.hardware import resolve_hardware
    from moesd.perf.hf_config import arch_from_dict
    from moesd.perf.inputs import load_params_file
    from moesd.perf.prior import physical_prior
    from moesd.perf.profiles import resolve_profile

    def arch(model: LoadedModel):
        try:
            raw = model.model.config.to_dict()
            raw.setdefault("torch_dtype", str(model.dtype).replace("torch.", ""))
            return arch_from_dict(raw, name=model.name)
        except MoesdError as exc:
            if spec.cost_params:
                return None
            raise MoesdError(f"--gamma auto prices steps from the model's config, which moesd cannot parse ({exc}); "
                             f"pass --params from `moesd fit` instead") from None

    hardware = spec.hardware
    if hardware is None:
        if target.device.type == "cuda":
            name = torch.cuda.get_device_name(target.device)
            hardware = next((h for h in ("H200", "H100", "A100", "L40", "L4", "B200") if h in name), None)
            if hardware is None:
                raise MoesdError(f"--gamma auto: no hardware preset for {name!r}; pass --hardware (a preset or JSON)")
        else:
            hardware = "cpu"
    hw = resolve_hardware(hardware)
    target_arch = arch(target)
    if spec.cost_params:
        params, _ = load_params_file(spec.cost_params)
        source = f"fitted ({spec.cost_params})"
    else:
        profile = resolve_profile(None, hw.name)
        hw_eff = dataclasses.replace(hw, bandwidth_efficiency=profile.bandwidth_efficiency,
                                     flops_efficiency=profile.flops_efficiency)
        draft_arch = arch(draft) if draft is not None else None
        params = physical_prior(target_arch, hw_eff, 1, draft_arch, profile=profile)
        source = f"prior ({hw.name}, engine profile {profile.name}), rescaled online"
    ctx = fit_context(hw, target_arch)
    num_experts, top_k = max(target.num_experts, 1), max(target.top_k, 1)

    # One cost model for every run of this engine: the machine and the models do not change between calls, so a
    # later call starts from what earlier ones measured (AdaptiveGamma trusts it near batch sizes they ran) and
    # need not pay for timed rounds again. Concurrent calls both feed it (observations of the same machine).
    options = dict(spec.gamma_policy_options)
    # The cost model's options (per-batch-size correction, a speed index anchored on the prior;
    # engine/step_cost_model.py): the engine's, not a call's.
    cost_options = {name: options.pop(name, default) for name, default in COST_OPTIONS.items()}
    for name, value in cost_options.items():
        if value not in (0, 1):  # True and False compare equal to 1 and 0
            raise MoesdError(f"{name} must be 0 or 1, got {value!r}")
    cost = StepCostModel(params, ctx, num_experts, top_k, source=source, max_gamma=spec.gamma,
                         **{name: bool(value) for name, value in cost_options.items()})
    cost.predicted(64, spec.gamma)  # a bad configuration fails here, and the prior's table is filled before any run

    known = set(inspect.signature(AdaptiveGamma).parameters) - {"max_gamma", "cost"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MoesdError(f"unknown --gamma auto option(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known | set(COST_OPTIONS)))})")
    AdaptiveGamma(spec.gamma, cost, **options)  # bad values fail here, before any run
    return GammaPolicies(spec.gamma, cost, options)


class GammaPolicies:
    """An engine's `--gamma auto` policies: calling it with a seed gives the next `generate` call a fresh
    `AdaptiveGamma` that shares `cost` (the engine's StepCostModel, also read by SpecEngine.gamma_cost_model) and
    starts from the previous call's acceptance and probe clock."""

    def __init__(self, max_gamma: int, cost: StepCostModel, options: dict) -> None:
        self.max_gamma, self.cost, self.options = max_gamma, cost, options
        self.last: AdaptiveGamma | None = None  # the previous call's policy: its acceptance is the next one's prior

    def __call__(self, seed: int) -> AdaptiveGamma:  # the rule draws nothing at random: the seed is not needed
        from moesd.engine.adaptive_gamma import AdaptiveGamma

        policy = AdaptiveGamma(self.max_gamma, self.cost, **self.options)
        if self.last is not None:
            policy.carry_acceptance(self.last)
            policy.carry_probe_clock(self.last)
        self.last = policy
        return policy


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
                  ngram_min: int = 2, ngram_max: int = 4, alpha_max: float | None = None, kv_cache: str = "static"):
    """A fresh proposer (no state carried between generations). Synthetic acceptance with a draft
    still runs the draft model, so its cost is real."""
    inner = DraftModelProposer(draft, target.vocab_size, kv_cache=kv_cache) if draft is not None else None
    if method == "model":
        return inner
    if method == "ngram":
        return NgramProposer(target.vocab_size, ngram_min, ngram_max)
    return SyntheticProposer(alpha, target.vocab_size, seed, inner, alpha_max)
