"""Predictions against published and measured speedups, and the derivations of the fitted engine profiles.

Used by benchmarks/derive_profiles.py (which prints the constants perf/profiles.py records),
benchmarks/validate_serving.py (docs/results.md section 13) and the tests that check both.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from moesd.perf.draft_kinds import draft_head
from moesd.perf.hardware import hardware_preset
from moesd.perf.hf_config import load_config_json
from moesd.perf.model_presets import model_preset
from moesd.perf.paper_tables import PAPER_BATCH_SIZES, PAPER_CONTEXT_LENGTH, PaperCell, cells
from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.profiles import PROFILES, ExecutionProfile


def paper_scenario(cell: PaperCell, profile: ExecutionProfile, context_length: int = PAPER_CONTEXT_LENGTH):
    target = model_preset(cell.target).arch()
    draft = model_preset(cell.draft).arch() if cell.draft_kind == "model" else draft_head(target, cell.draft_kind)
    hw = replace(hardware_preset(cell.device), bandwidth_efficiency=profile.bandwidth_efficiency,
                 flops_efficiency=profile.flops_efficiency)
    return Scenario.from_prior(target, hw, cell.tp, draft, 1, profile, context_length)


def predict_cell(cell: PaperCell, profile: ExecutionProfile, context_length: int = PAPER_CONTEXT_LENGTH):
    """The peak predicted speedup over the paper's batch grid at the cell's sigma and gamma, and its B."""
    grid = predict(paper_scenario(cell, profile, context_length), PAPER_BATCH_SIZES, [cell.gamma],
                   Acceptance(sigma=cell.sigma))
    sp = np.where(grid["fits_memory"], grid["speedup"], -np.inf)[0]
    j = int(np.argmax(sp))
    return float(sp[j]), int(grid["batch_size"][0][j])


def errors_pct(cs: list[PaperCell], profile: ExecutionProfile) -> np.ndarray:
    return np.array([100.0 * (predict_cell(c, profile)[0] / c.speedup - 1.0) for c in cs])


def fit_vllm_v0(base: ExecutionProfile | None = None) -> tuple[ExecutionProfile, dict]:
    """The vLLM-V0 profile from Table 1's Qwen2 rows (2xA800) only.

    Free: the draft's per-layer cost (vLLM V0 did not graph-capture the draft), the per-round SD bookkeeping,
    and the bandwidth efficiency. The target's per-layer cost and the all-reduce step stay at the cuda-graph
    profile's (V0 captured the target; one TP degree on one device cannot separate them)."""
    from scipy.optimize import least_squares

    base = base or PROFILES["cuda-graph"]
    train = cells(table=1, target="Qwen2-57B-A14B-Instruct")

    def profile_of(x):
        return ExecutionProfile("vllm-v0", PROFILES["vllm-v0"].description, PROFILES["vllm-v0"].source,
                                layer_s=base.layer_s, allreduce_hop_s=base.allreduce_hop_s,
                                draft_layer_s=float(x[0]) * 1e-3, sd_step_s=float(x[1]) * 1e-3,
                                bandwidth_efficiency=float(x[2]), flops_efficiency=1.0)

    def residuals(x):
        p = profile_of(x)
        return [math.log(predict_cell(c, p)[0] / c.speedup) for c in train]

    res = least_squares(residuals, [0.1, 5.0, 0.9], bounds=([0.0, 0.0, 0.3], [2.0, 50.0, 1.0]))
    fitted = profile_of(np.round(res.x, 4))
    err = errors_pct(train, fitted)
    return fitted, {"cells": len(train), "median_abs_pct_error": float(np.median(np.abs(err))),
                    "max_abs_pct_error": float(np.max(np.abs(err)))}


def fit_hf_eager(dense_records: list[dict], target_config: str, draft_config: str) -> tuple[ExecutionProfile, dict]:
    """transformers-eager fixed costs from one sweep of a dense target with a small draft (no MoE in it).

    Per forward: fixed = forward_s + layer_s x layers, what is left of each measured stage time after its
    bytes at the hardware's bandwidth; the target (L layers) and draft (l layers) medians give two equations.
    The per-round SD cost is the measured rejection stage plus the engine's time outside forwards in an SD
    step (`outside_forward_fraction` of the step), medians over the points."""
    from moesd.perf.hardware import resolve_hardware

    target = load_config_json(target_config)
    draft = load_config_json(draft_config)
    hw = resolve_hardware(str(dense_records[0].get("hardware") or "H200"))
    bw = hw.memory_bandwidth_bytes_per_s
    decode = np.median([r["target_decode_s"] for r in dense_records])
    draft_s = np.median([r["draft_s"] for r in dense_records])
    t_fixed = decode - target.active_bytes_per_token / bw
    d_fixed = draft_s - draft.active_bytes_per_token / bw
    layer_s = (t_fixed - d_fixed) / (target.num_layers - draft.num_layers)
    forward_s = t_fixed - layer_s * target.num_layers
    sd_step_s = float(np.median([
        r["reject_s"] + r["outside_forward_fraction"] / (1.0 - r["outside_forward_fraction"])
        * (r["gamma"] * r["draft_s"] + r["target_verify_s"] + r["reject_s"]) for r in dense_records]))
    profile = ExecutionProfile("hf-eager", PROFILES["hf-eager"].description, PROFILES["hf-eager"].source,
                               forward_s=round(forward_s, 7), layer_s=round(layer_s, 7),
                               draft_forward_s=round(forward_s, 7), draft_layer_s=round(layer_s, 7),
                               moe_layer_s=PROFILES["hf-eager"].moe_layer_s, sd_step_s=round(sd_step_s, 7))
    return profile, {"decode_s": float(decode), "draft_s": float(draft_s), "target_fixed_s": float(t_fixed),
                     "draft_fixed_s": float(d_fixed)}


def predict_bench_records(records: list[dict], target, draft, hw, profile: ExecutionProfile,
                          context_length: int) -> list[dict]:
    """Each `moesd bench` point predicted unfitted (its own B, gamma and measured sigma): stage times and
    speedup beside the measured ones, with signed errors in percent."""
    from moesd.perf.step_time import step_times
    from moesd.perf.speedup import speedup

    sc = Scenario.from_prior(target, hw, 1, draft, 1, profile, context_length)
    out = []
    for r in records:
        t = step_times(sc.params, sc.context, r["batch_size"], r["gamma"], target.num_experts,
                       target.experts_per_token)
        pred = {"target_decode_s": float(t["target_decode_s"]), "target_verify_s": float(t["target_verify_s"]),
                "draft_s": float(t["draft_s"]),
                "speedup": float(speedup(r["sigma"], r["gamma"], t["target_decode_s"], t["target_verify_s"],
                                         t["draft_s"], t["reject_s"]))}
        row = {"batch_size": r["batch_size"], "gamma": r["gamma"]}
        for k, v in pred.items():
            row[k] = {"measured": r[k], "predicted": v, "error_pct": 100.0 * (v / r[k] - 1.0)}
        out.append(row)
    return out
