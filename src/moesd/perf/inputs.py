"""Turn command-line style inputs (names, paths, numbers) into a ready `Scenario`."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from moesd.errors import MoesdError
from moesd.jsonl import read_json
from moesd.perf.architecture import ArchSpec
from moesd.perf.experts import RoutingCurve
from moesd.perf.hardware import resolve_hardware
from moesd.perf.hf_config import load_config_json
from moesd.perf.model_presets import MODEL_PRESETS, model_preset
from moesd.perf.draft_kinds import DRAFT_KINDS, draft_head
from moesd.perf.prediction import Scenario
from moesd.perf.profiles import resolve_profile
from moesd.perf.step_time import StepContext, StepTimeParams


_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps its cache, read now (HF_HUB_CACHE, else HF_HOME/hub, else the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def config_from_hf_cache(model_id: str) -> Path:
    """`org/name` or `org/name@revision` -> its config.json in the local Hugging Face cache, through
    huggingface_hub's own cache lookup (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = model_id.partition("@")
    cache = hf_cache_dir()
    found = try_to_load_from_cache(repo, "config.json", cache_dir=str(cache), revision=revision or None)
    if isinstance(found, str) and Path(found).is_file():
        return Path(found)
    raise MoesdError(f"{model_id} is not in the local Hugging Face cache (looked in {cache}): download its "
                     f"config.json there (`hf download {repo} config.json`), or pass a config.json path or a preset")


def resolve_model(name_or_path: str) -> ArchSpec:
    """A preset name, a config.json path / model directory, or a Hugging Face id in the local cache."""
    if name_or_path in MODEL_PRESETS:
        return MODEL_PRESETS[name_or_path].arch()
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".json":
        return load_config_json(p)
    if _HF_ID.match(name_or_path):
        arch = load_config_json(config_from_hf_cache(name_or_path))
        return replace(arch, name=name_or_path.partition("@")[0].split("/")[-1])
    if "/" in name_or_path:
        return load_config_json(p)  # a path that does not exist: says so
    return model_preset(name_or_path).arch()  # raises, listing valid presets


def optional_model(name_or_path: str) -> ArchSpec | None:
    """`resolve_model`, or None where the name has no parseable config (a GGUF, an upcycled twin, a
    built-in engine source): callers then bound loads by the data alone."""
    try:
        return resolve_model(name_or_path)
    except MoesdError:
        return None


def load_params_file(path: str | Path) -> tuple[StepTimeParams, dict]:
    """Read the output of `moesd fit` (or a bare dict of the 10 parameters); returns (params, context)."""
    p = Path(path)
    data = read_json(p, "parameter file")
    if not isinstance(data, dict):
        raise MoesdError(f"{p}: parameter file must be a JSON object")
    params = data.get("params", data)
    if not isinstance(params, dict):
        raise MoesdError(f"{p}: 'params' must be a JSON object")
    try:
        return StepTimeParams.from_dict(params), data.get("context", {})
    except MoesdError as exc:
        raise MoesdError(f"{p}: {exc}") from None


KV_DTYPES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp32": 4.0}


def build_scenario(target: str, hardware: str, draft: str | None = None, tp: int = 1, ep: int = 1,
                   experts_per_token: int | None = None, expert_budget: int | None = None,
                   params_file: str | None = None, routing_curve: str | None = None,
                   verify_convention: str | None = None, bandwidth_efficiency: float | None = None,
                   flops_efficiency: float | None = None, engine: str | None = None, draft_kind: str | None = None,
                   context_length: int = 0, kv_dtype: str = "bf16", force: bool = False) -> tuple[Scenario, list[str]]:
    """Returns the scenario and notes worth showing the user next to the prediction."""
    notes: list[str] = []
    target_arch = resolve_model(target)
    if experts_per_token is not None:
        if not target_arch.is_moe:
            raise MoesdError(f"--experts-per-token needs an MoE target; {target_arch.name} is dense")
        target_arch = target_arch.with_experts_per_token(experts_per_token)
    kind = draft_kind or ("model" if draft else "ngram")
    if kind not in DRAFT_KINDS:
        raise MoesdError(f"unknown draft kind {kind!r} (use {', '.join(DRAFT_KINDS)})")
    if kind == "model":
        if not draft:
            raise MoesdError("--draft-kind model needs --draft (a preset or config.json)")
        draft_arch = resolve_model(draft)
    else:
        if draft:
            raise MoesdError(f"--draft names a draft model, but --draft-kind is {kind}: give one or the other")
        draft_arch = draft_head(target_arch, kind)
    if kv_dtype not in KV_DTYPES:
        raise MoesdError(f"unknown KV-cache dtype {kv_dtype!r} (use {', '.join(KV_DTYPES)})")
    if context_length < 0:
        raise MoesdError(f"--context-length must be >= 0, got {context_length}")
    hw = resolve_hardware(hardware)
    profile = resolve_profile(engine, hw.name)
    hw = replace(hw, bandwidth_efficiency=profile.bandwidth_efficiency if bandwidth_efficiency is None
                 else bandwidth_efficiency,
                 flops_efficiency=profile.flops_efficiency if flops_efficiency is None else flops_efficiency)
    params, context = (None, {}) if params_file is None else load_params_file(params_file)
    if params is not None:
        _check_provenance(params_file, context, target_arch, hw, force, notes)
    if kind == "ngram":
        notes.append("draft: prompt lookup / n-gram (no model): zero draft cost")
    elif kind != "model":
        notes.append(f"draft: {draft_arch.name} ({draft_arch.total_params / 1e6:.0f} M parameters incl. the LM head)")
    convention = verify_convention or context.get("verify_convention", "engine")
    curve = RoutingCurve.from_file(routing_curve) if routing_curve else None
    if curve is not None:
        notes.append(f"expert counts from measured routing curve {routing_curve}")
    if expert_budget is not None:
        if not target_arch.is_moe:
            raise MoesdError(f"--expert-budget needs an MoE target; {target_arch.name} is dense")
        if expert_budget < target_arch.experts_per_token:
            raise MoesdError(f"expert budget {expert_budget} is below the {target_arch.experts_per_token} experts "
                             f"one token needs")
        if expert_budget > target_arch.num_experts:
            raise MoesdError(f"expert budget {expert_budget} exceeds the {target_arch.num_experts} experts per layer")
    scenario = Scenario.from_prior(target_arch, hw, tp, draft_arch, ep, None if params is not None else profile,
                                   context_length, KV_DTYPES[kv_dtype], params is None, verify_convention=convention,
                                   routing=curve, expert_budget=expert_budget)
    if params is not None:
        scenario = scenario.with_params(params)
        notes.append(f"fitted parameters from {params_file} (engine profile of the fit: "
                     f"{context.get('engine') or 'not recorded'})")
    else:
        default = " (the default for this hardware; --engine to change)" if engine is None else ""
        notes.append(f"engine profile {profile.name}{default}: {profile.description}")
        if profile.name == "roofline":
            notes.append("physical prior (roofline bound, no overheads): fit to measurements for absolute numbers")
    if context_length:
        notes.append(f"KV cache: {context_length} tokens of context per sequence, {kv_dtype}"
                     + (" (memory check only: fitted parameters carry their runs' KV reads)" if params else ""))
    if expert_budget is not None:
        notes.append(f"verify capped at {expert_budget} experts per layer (MoE-Spec): not lossless")
    if tp > 1:
        notes.append(allreduce_note(target_arch, hw, tp))
    return scenario, notes


def allreduce_note(target: ArchSpec, hw, tp: int) -> str:
    """What tensor parallelism's all-reduces move per token over the device's scale-up link: two per layer (after
    attention and after the FFN) of hidden x 2 bytes, a ring moving 2 (tp - 1) / tp of it. The step-time model
    charges TP only through the profile's per-hop latency; this says when the bandwidth term matters too."""
    per_token_bytes = 2 * target.num_layers * target.hidden_size * 2 * 2 * (tp - 1) / tp
    if not hw.interconnect_bytes_per_s:
        return (f"TP {tp}: {per_token_bytes / 1e3:.0f} kB of all-reduce traffic per token and {hw.name} has no "
                f"scale-up link (PCIe only): at large B x (gamma+1) this bandwidth cost is not in the model")
    us = 1e6 * per_token_bytes / hw.interconnect_bytes_per_s
    return (f"TP {tp}: all-reduce traffic {per_token_bytes / 1e3:.0f} kB per token, {us:.2f} us per token on "
            f"{hw.interconnect_bytes_per_s / 1e9:.0f} GB/s links (a verify of B x (gamma+1) tokens pays it per "
            f"token; the model charges TP only the profile's per-hop latency)")


def _check_provenance(path: str, context: dict, target: ArchSpec, hw, force: bool, notes: list[str]) -> None:
    """Parameters fitted on one model or machine describe that model on that machine only."""
    mismatches = []
    if context.get("target") not in (None, target.name):
        mismatches.append(f"target {context['target']!r} (here {target.name!r})")
    if context.get("hardware") not in (None, hw.name):
        mismatches.append(f"hardware {context['hardware']!r} (here {hw.name!r})")
    if mismatches:
        text = f"{path} was fitted for " + " and ".join(mismatches)
        if not force:
            raise MoesdError(text + ": refusing to apply it (--force to apply it anyway)")
        notes.append(text + ": applied because of --force")


def context_dict(scenario: Scenario) -> dict:
    ctx: StepContext = scenario.context
    return {
        "target": scenario.target.name,
        "draft": scenario.draft.name if scenario.draft else None,
        "hardware": scenario.hardware.name,
        "tp": scenario.tp,
        "ep": ctx.ep,
        "experts_per_token": scenario.target.experts_per_token,
        "num_experts": scenario.target.num_experts,
        "verify_convention": ctx.verify_convention,
        "expert_budget": ctx.expert_budget,
        "engine": scenario.profile.name if scenario.profile else None,
        "context_length": ctx.context_length,
        "knee_tokens": ctx.knee(scenario.params.lam),
        "params": scenario.params.to_dict(),
    }
