"""Turn command-line style inputs (names, paths, numbers) into a ready `Scenario`."""

from __future__ import annotations

import json
from pathlib import Path

from moesd.errors import MoesdError
from moesd.perf.architecture import ArchSpec
from moesd.perf.experts import RoutingCurve
from moesd.perf.hardware import resolve_hardware
from moesd.perf.hf_config import load_config_json
from moesd.perf.model_presets import MODEL_PRESETS, model_preset
from moesd.perf.prediction import Scenario
from moesd.perf.step_time import StepContext, StepTimeParams


def resolve_model(name_or_path: str) -> ArchSpec:
    """A preset name, or a config.json path / model directory."""
    if name_or_path in MODEL_PRESETS:
        return MODEL_PRESETS[name_or_path].arch()
    p = Path(name_or_path)
    if p.suffix == ".json" or p.is_dir() or p.exists() or "/" in name_or_path:
        return load_config_json(p)
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
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise MoesdError(f"parameter file not found: {p}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MoesdError(f"cannot read parameter file {p}: {exc}") from None
    if not isinstance(data, dict):
        raise MoesdError(f"{p}: parameter file must be a JSON object")
    params = data.get("params", data)
    if not isinstance(params, dict):
        raise MoesdError(f"{p}: 'params' must be a JSON object")
    try:
        return StepTimeParams.from_dict(params), data.get("context", {})
    except MoesdError as exc:
        raise MoesdError(f"{p}: {exc}") from None


def build_scenario(target: str, hardware: str, draft: str | None = None, tp: int = 1, ep: int = 1,
                   experts_per_token: int | None = None, expert_budget: int | None = None,
                   params_file: str | None = None, routing_curve: str | None = None,
                   verify_convention: str | None = None, bandwidth_efficiency: float | None = None,
                   flops_efficiency: float | None = None) -> tuple[Scenario, list[str]]:
    """Returns the scenario and notes worth showing the user next to the prediction."""
    notes: list[str] = []
    target_arch = resolve_model(target)
    if experts_per_token is not None:
        if not target_arch.is_moe:
            raise MoesdError(f"--experts-per-token needs an MoE target; {target_arch.name} is dense")
        target_arch = target_arch.with_experts_per_token(experts_per_token)
    draft_arch = resolve_model(draft) if draft else None
    hw = resolve_hardware(hardware, bandwidth_efficiency, flops_efficiency)
    params, context = (None, {}) if params_file is None else load_params_file(params_file)
    if draft_arch is None and (params is None or params.draft_bias_s == 0.0):
        notes.append("no draft model: draft cost is zero (prompt lookup / n-gram drafting)")
    convention = verify_convention or context.get("verify_convention", "engine")
    curve = RoutingCurve.from_file(routing_curve) if routing_curve else None
    if curve is not None:
        notes.append(f"expert counts from measured routing curve {routing_curve}")
    if expert_budget is not None and target_arch.is_moe and expert_budget < target_arch.experts_per_token:
        raise MoesdError(
            f"expert budget {expert_budget} is below the {target_arch.experts_per_token} experts one token needs"
        )
    scenario = Scenario.from_prior(target_arch, hw, tp, draft_arch, ep, verify_convention=convention,
                                   routing=curve, expert_budget=expert_budget)
    if params is not None:
        scenario = scenario.with_params(params)
        notes.append(f"fitted parameters from {params_file}")
    else:
        notes.append("physical prior (roofline bound, no overheads): fit to measurements for absolute numbers")
    if expert_budget is not None:
        notes.append(f"verify capped at {expert_budget} experts per layer (MoE-Spec): not lossless")
    return scenario, notes


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
        "knee_tokens": ctx.knee(scenario.params.lam),
        "params": scenario.params.to_dict(),
    }
