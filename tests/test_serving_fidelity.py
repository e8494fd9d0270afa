"""Predictions that carry what real engines pay: execution profiles, draft kinds, KV cache and memory,
acceptance as serving engines report it, ceilings, and fitted-parameter provenance."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesd.errors import MoesdError
from moesd.perf.acceptance import (acceptance_rate_from_alpha, alpha_from_acceptance_rate,
                                   alpha_from_mean_acceptance_length, mean_acceptance_length)
from moesd.perf.acceptance_curve import AcceptanceCurve
from moesd.perf.draft_kinds import draft_head
from moesd.perf.hardware import hardware_preset
from moesd.perf.inputs import build_scenario
from moesd.perf.model_presets import model_preset
from moesd.perf.paper_tables import cells
from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.profiles import PROFILES
from moesd.perf.step_time import step_times
from cli_helpers import run  # noqa: E402

QWEN = ["--target", "Qwen2-57B-A14B-Instruct", "--draft", "Qwen2-0.5B-Instruct", "--hardware", "H800", "--tp", "2"]


# --- acceptance inputs -------------------------------------------------------------------------
def test_conversions_against_hand_computed_values():
    # alpha 0.78, gamma 4: MAL = (1 - 0.78^5) / 0.22 = (1 - 0.2887174) / 0.22 = 3.2331; rate = (MAL - 1) / 4.
    assert float(mean_acceptance_length(0.78, 4)) == pytest.approx(3.2331, abs=1e-4)
    assert float(acceptance_rate_from_alpha(0.78, 4)) == pytest.approx(0.558276, abs=1e-5)
    assert alpha_from_acceptance_rate(0.558276, 4) == pytest.approx(0.78, abs=1e-4)
    assert alpha_from_mean_acceptance_length(3.2331, 4) == pytest.approx(0.78, abs=1e-4)
    # The example: vLLM's 0.55 at K = 4 is alpha ~0.78, not 0.55.
    assert alpha_from_acceptance_rate(0.55, 4) == pytest.approx(0.7747, abs=1e-3)
    assert alpha_from_acceptance_rate(0.0, 3) == 0.0 and alpha_from_mean_acceptance_length(1.0, 3) == 0.0


def test_acceptance_rate_input_equals_the_alpha_it_converts_to(capsys):
    base = [*QWEN, "--gamma", "4", "--batch-sizes", "1,16,40", "--json"]
    rc1, out1, _ = run(capsys, "predict", *base, "--alpha", "0.78")
    rc2, out2, _ = run(capsys, "predict", *base, "--acceptance-rate", "0.558276")
    rc3, out3, _ = run(capsys, "predict", *base, "--mean-acceptance-length", "3.2331")
    assert rc1 == rc2 == rc3 == 0
    s1, s2, s3 = ([r["speedup"] for r in json.loads(o)["rows"]] for o in (out1, out2, out3))
    np.testing.assert_allclose(s2, s1, rtol=1e-3)
    np.testing.assert_allclose(s3, s1, rtol=1e-3)
    # measured at gamma 4, predicted at gamma 2 and 3 through the converted alpha
    rc, out, _ = run(capsys, "predict", *QWEN, "--gamma", "2,3", "--acceptance-rate", "0.558276",
                     "--measured-at-gamma", "4", "--batch-sizes", "16", "--json")
    sig = [r["sigma"] for r in json.loads(out)["rows"]]
    np.testing.assert_allclose(sig, [float(mean_acceptance_length(0.78, g)) / (g + 1) for g in (2, 3)], rtol=1e-3)


def test_acceptance_curve_forms_and_best_gamma(tmp_path, capsys):
    per_pos = AcceptanceCurve.from_dict({"per_position_acceptance": [0.9, 0.6, 0.2]})
    assert per_pos.mean_acceptance_length == pytest.approx({1: 1.9, 2: 2.5, 3: 2.7})
    assert per_pos.sigma(2) == pytest.approx(2.5 / 3)
    f = tmp_path / "curve.json"
    f.write_text(json.dumps({"mean_acceptance_length": {"1": 1.9, "2": 2.5, "3": 2.7}}))
    rc, out, _ = run(capsys, "predict", *QWEN, "--acceptance-curve", str(f), "--batch-sizes", "1,40", "--json")
    res = json.loads(out)
    assert rc == 0 and sorted({r["gamma"] for r in res["rows"]}) == [1, 2, 3]
    for r in res["rows"]:
        assert r["mean_acceptance_length"] == pytest.approx({1: 1.9, 2: 2.5, 3: 2.7}[r["gamma"]])
    rc, out, _ = run(capsys, "schedule", *QWEN, "--acceptance-curve", str(f), "--max-batch-size", "8", "--format",
                     "table")
    assert rc == 0


BAD = [
    (["predict", *QWEN, "--acceptance-rate", "1.2", "--gamma", "4"], "acceptance rate must lie in [0, 1)"),
    (["predict", *QWEN, "--acceptance-rate", "nan", "--gamma", "4"], "acceptance rate must lie in [0, 1)"),
    (["predict", *QWEN, "--mean-acceptance-length", "6", "--gamma", "4"], "must lie in [1, 5)"),
    (["predict", *QWEN, "--mean-acceptance-length", "0.5", "--gamma", "4"], "must lie in [1, 5)"),
    (["predict", *QWEN, "--acceptance-rate", "0.5", "--gamma", "2,4"], "give --measured-at-gamma"),
    (["predict", *QWEN, "--alpha", "0.7", "--context-length", "-1"], "--context-length must be >= 0"),
    (["predict", *QWEN, "--alpha", "0.7", "--engine", "tgi"], "unknown engine profile 'tgi'"),
    (["predict", "--target", "OPT-30B", "--hardware", "H800", "--alpha", "0.7", "--draft-kind", "mtp"],
     "OPT-30B is dense"),
    (["predict", *QWEN, "--alpha", "0.7", "--draft-kind", "eagle"], "give one or the other"),
    (["predict", *QWEN, "--alpha", "0.7", "--expert-budget", "100"], "exceeds the 64 experts"),
    (["predict", "--target", "OPT-30B", "--hardware", "H800", "--alpha", "0.7", "--expert-budget", "8"],
     "needs an MoE target"),
    (["predict", "--target", "DeepSeek-V3", "--hardware", "H800", "--alpha", "0.7"], "no batch size fits"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("moesd: error: ") and message in err


@pytest.mark.parametrize("content, message", [
    ('{"mean_acceptance_length": {"1": 1.9, "2": 1.5}}', "cannot lose accepted tokens"),
    ('{"mean_acceptance_length": {"2": 3.5}}', "must lie in [1, 3]"),
    ('{"points": [[1, "x"]]}', "finite number"),
    ('{"per_position_acceptance": [1.5]}', "must lie in [0, 1]"),
    ('[1, 2]', "expected a JSON object"),
    ('{"mean_acceptance_length": {"1": NaN}}', "NaN is not allowed"),
])
def test_bad_acceptance_curves(tmp_path, capsys, content, message):
    f = tmp_path / "c.json"
    f.write_text(content)
    rc, out, err = run(capsys, "predict", *QWEN, "--acceptance-curve", str(f))
    assert rc == 2 and out == "" and message in err and err.count("\n") == 1


# --- ceilings ------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(0.0, 0.95), budget=st.one_of(st.none(), st.integers(8, 64)),
       engine=st.sampled_from(sorted(PROFILES)), gamma=st.integers(1, 8))
def test_speedup_never_exceeds_its_ceiling(alpha, budget, engine, gamma):
    sc, _ = build_scenario("Qwen2-57B-A14B-Instruct", "H800", "Qwen2-0.5B-Instruct", tp=2, expert_budget=budget,
                           engine=engine, context_length=256)
    b = [1, 4, 16, 40, 100, 300]
    grid = predict(sc, b, [gamma], Acceptance(alpha=alpha))
    mal = grid["mean_acceptance_length"]
    if budget is None:
        assert np.all(grid["speedup"] <= mal + 1e-9)  # lossless SD: never more than the tokens per round
    else:
        # The budgeted verifier's own ceiling: tokens per round x (full decode / decode through the budget).
        t = sc.target
        capped = step_times(sc.params, sc.context, grid["batch_size"], 0 * grid["gamma"] + 1, t.num_experts,
                            t.experts_per_token)
        from dataclasses import replace

        ctx_c = replace(sc.context, expert_budget=budget)
        from moesd.perf.step_time import target_time_s

        decode_c = target_time_s(sc.params, ctx_c, grid["batch_size"], t.num_experts, t.experts_per_token, budget)[0]
        kv = grid["batch_size"] * sc.context.context_length * sc.context.target_kv_s_per_token
        ceiling = mal * capped["target_decode_s"] / (decode_c + kv)
        assert np.all(grid["speedup"] <= ceiling + 1e-9)


# --- KV cache and memory -------------------------------------------------------------------------
def test_kv_bytes_per_token_gqa_and_mla():
    q = model_preset("Qwen2-57B-A14B-Instruct").arch()
    assert q.kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2  # K and V, 28 layers, 4 KV heads of 128, bf16
    d = model_preset("DeepSeek-V3").arch()
    assert d.kv_bytes_per_token() == 61 * (512 + 64) * 2  # MLA: latent 512 + rope key 64 per layer
    assert d.kv_bytes_per_token(1.0) == 61 * 576


def test_rows_that_do_not_fit_are_marked_and_excluded(capsys):
    rc, out, _ = run(capsys, "predict", *QWEN, "--alpha", "0.8", "--gamma", "4", "--batch-sizes", "16,256,1024",
                     "--context-length", "4096", "--json")
    res = json.loads(out)
    fits = {r["batch_size"]: r["fits_memory"] for r in res["rows"]}
    # 57.4 GB of weights per device pair + 1 GB draft; 4096 tokens x 41 kB per sequence: ~112 sequences fit.
    assert fits == {16: True, 256: False, 1024: False}
    assert res["summary"]["peak_batch_size"] == 16
    assert [e["batch_size"] for e in res["summary"]["best_gamma"]] == [16]
    assert any("do not fit in device memory" in n for n in res["summary"]["notes"])


def test_kv_rivalling_experts_is_said(capsys):
    args = ["--target", "Qwen3-30B-A3B", "--hardware", "H200", "--alpha", "0.7", "--gamma", "2", "--batch-sizes", "64"]
    rc, out, _ = run(capsys, "predict", *args, "--context-length", "32768")
    # 64 x 32768 tokens x 98 kB = 206 GB would not fit: 8192 tokens, 51 GB against 56 GB of experts does.
    assert rc == 2
    rc, out, _ = run(capsys, "predict", *args, "--context-length", "8192")
    assert rc == 0 and "the KV cache rivals expert loading" in out
    rc, out, _ = run(capsys, "predict", *args, "--context-length", "256")
    assert rc == 0 and "rivals" not in out


def test_kv_reads_add_to_every_stage_in_proportion_to_batch_and_context():
    t = model_preset("Qwen2-57B-A14B-Instruct").arch()
    d = model_preset("Qwen2-0.5B-Instruct").arch()
    hw = hardware_preset("H800")
    times = {}
    for ctx in (0, 2048):
        sc = Scenario.from_prior(t, hw, 2, d, context_length=ctx)
        times[ctx] = step_times(sc.params, sc.context, 8, 4, t.num_experts, t.experts_per_token)
    extra = times[2048]["target_decode_s"] - times[0]["target_decode_s"]
    assert extra == pytest.approx(8 * 2048 * t.kv_bytes_per_token() / (2 * hw.memory_bandwidth_bytes_per_s))
    assert times[2048]["draft_s"] - times[0]["draft_s"] == pytest.approx(
        8 * 2048 * d.kv_bytes_per_token() / hw.memory_bandwidth_bytes_per_s)


# --- profiles and draft kinds ----------------------------------------------------------------------
def test_profile_adds_its_fixed_costs_to_the_prior():
    t = model_preset("Qwen2-57B-A14B-Instruct").arch()
    d = model_preset("Qwen2-0.5B-Instruct").arch()
    hw = hardware_preset("H800")
    base = Scenario.from_prior(t, hw, 2, d).params
    p = PROFILES["vllm-v0"]
    with_p = Scenario.from_prior(t, hw, 2, d, profile=p).params
    # 28 target layers x 60 us + 2 all-reduces x 28 layers x 2 ring steps x 3.5 us; 24 draft layers.
    assert with_p.bias_s - base.bias_s == pytest.approx(28 * 60e-6 + 2 * 28 * 2 * 3.5e-6)
    assert with_p.draft_bias_s - base.draft_bias_s == pytest.approx(24 * p.draft_layer_s)
    assert with_p.reject_bias_s - base.reject_bias_s == pytest.approx(p.sd_step_s)


def test_default_profile_is_stated(capsys):
    rc, out, _ = run(capsys, "predict", *QWEN, "--alpha", "0.8", "--gamma", "4", "--batch-sizes", "8")
    assert rc == 0 and "engine profile cuda-graph (the default for this hardware" in out


def test_fitted_profiles_are_what_their_derivations_give():
    from pathlib import Path

    from moesd.perf.validation import fit_hf_eager, fit_vllm_v0

    v0, info = fit_vllm_v0()
    assert v0.draft_layer_s == pytest.approx(PROFILES["vllm-v0"].draft_layer_s, rel=0.01)
    assert v0.sd_step_s == pytest.approx(PROFILES["vllm-v0"].sd_step_s, rel=0.01)
    assert info["median_abs_pct_error"] < 5.0
    d = Path(__file__).resolve().parent.parent / "results" / "h200_hf_eager"
    records = [json.loads(x) for x in (d / "dense_twin.jsonl").read_text().splitlines() if x.strip()]
    eager, _ = fit_hf_eager(records, str(d / "dense_twin.json"), str(d / "draft.json"))
    for k in ("forward_s", "layer_s", "sd_step_s"):
        assert getattr(eager, k) == pytest.approx(getattr(PROFILES["hf-eager"], k), rel=0.01), k


def test_draft_heads_follow_the_target():
    mixtral = model_preset("Mixtral-8x7B-Instruct-v0.1").arch()
    eagle = draft_head(mixtral, "eagle")
    # one Llama layer (attention 4096 x (4096 + 2 x 1024 + 4096) + gated FFN 3 x 4096 x 14336), the fc
    # (2 x 4096 x 4096), norms, and Mixtral's LM head (32000 x 4096)
    expected = 4096 * (4096 + 2 * 1024 + 4096) + 3 * 4096 * 14336 + 2 * 4096 * 4096 + 3 * 4096 + 32000 * 4096
    assert eagle.total_params == expected and eagle.num_layers == 1 and not eagle.is_moe
    mtp = draft_head(model_preset("DeepSeek-V3").arch(), "mtp")
    assert mtp.num_layers == 1 and mtp.is_moe and mtp.num_experts == 256 and mtp.experts_per_token == 8
    assert draft_head(mixtral, "ngram") is None
    with pytest.raises(MoesdError):
        draft_head(mixtral, "medusa")


def test_paper_tables_are_complete():
    assert len(cells(1)) == 24 and len(cells(2)) == 36
    assert next(c for c in cells(2) if c.device == "H800" and c.gamma == 4 and c.temperature == 0.0
                and c.dataset == "humaneval").speedup == 2.29


# --- provenance and few-point fits ---------------------------------------------------------------
def test_few_point_fit_and_provenance(tmp_path, capsys):
    # Three points from a known truth: the cuda-graph prior plus 2 ms per target forward and 1 ms per round.
    from dataclasses import replace

    sc, _ = build_scenario("Qwen3-30B-A3B", "H100-SXM", tp=2, context_length=0)
    truth = replace(sc.params, bias_s=sc.params.bias_s + 2e-3, reject_bias_s=sc.params.reject_bias_s + 1e-3)
    grid = predict(sc.with_params(truth), [1, 8, 32], [4], Acceptance(alpha=0.8))
    meas = tmp_path / "m.csv"
    meas.write_text("batch_size,gamma,speedup,alpha,target_decode_s\n" + "".join(
        f"{b},4,{s},0.8,{t}\n" for b, s, t in zip(grid["batch_size"][0], grid["speedup"][0], grid["target_decode_s"][0])))
    params = tmp_path / "p.json"
    rc, out, err = run(capsys, "fit", str(meas), "--target", "Qwen3-30B-A3B", "--hardware", "H100-SXM", "--tp", "2",
                       "-o", str(params))
    assert rc == 0, err
    saved = json.loads(params.read_text())
    ctx = saved["context"]
    assert ctx["target"] == "Qwen3-30B-A3B" and ctx["hardware"] == "H100-SXM" and ctx["tp"] == 2
    assert ctx["engine"] == "cuda-graph" and ctx["data"]["batch_sizes"] == [1, 8, 32]
    assert set(saved["fit"]["free_parameters"]) <= {"target_fixed_s", "sd_step_s", "load_scale", "draft_fixed_s"}
    assert 1 <= len(saved["fit"]["free_parameters"]) <= 5
    assert saved["fit"]["max_abs_pct_error"] < 1.0  # the few free costs recover the truth
    assert saved["params"]["bias_s"] == pytest.approx(truth.bias_s, rel=0.02)
    args = ["--hardware", "H100-SXM", "--tp", "2", "--alpha", "0.8", "--gamma", "4", "--batch-sizes", "8"]
    rc, _, err = run(capsys, "predict", "--target", "OLMoE-1B-7B", *args, "--params", str(params))
    assert rc == 2 and "fitted for target 'Qwen3-30B-A3B'" in err and "--force" in err
    rc, _, err = run(capsys, "predict", "--target", "Qwen3-30B-A3B", *args[2:], "--hardware", "H200",
                     "--params", str(params))
    assert rc == 2 and "hardware 'H100-SXM'" in err
    rc, out, _ = run(capsys, "predict", "--target", "OLMoE-1B-7B", *args, "--params", str(params), "--force")
    assert rc == 0 and "applied because of --force" in out
    rc, out, _ = run(capsys, "predict", "--target", "Qwen3-30B-A3B", *args, "--params", str(params), "--json")
    assert rc == 0 and math.isfinite(json.loads(out)["rows"][0]["speedup"])


def test_configs_in_one_directory_keep_their_own_names(tmp_path, capsys):
    """Two config.json-style files side by side are different models: provenance must tell them apart."""
    root = __import__("pathlib").Path(__file__).resolve().parent.parent / "benchmarks" / "configs"
    from moesd.perf.hf_config import load_config_json

    assert load_config_json(root / "cpu_moe_e64k8.json").name == "cpu_moe_e64k8"
    assert load_config_json(root / "cpu_dense_twin.json").name == "cpu_dense_twin"


def test_hardware_names_users_type(capsys):
    assert hardware_preset("h100").name == "H100-SXM" and hardware_preset("h800").name == "H800"
    assert hardware_preset("A100").name == "A100-80GB" and hardware_preset("L40").name == "L40"
    rc, out, err = run(capsys, "predict", "--target", "OLMoE-1B-7B", "--hardware", "H10", "--alpha", "0.7")
    assert rc == 2 and "unknown hardware 'H10'; did you mean H100-SXM" in err and err.count("\n") == 1


def test_model_ids_resolve_from_the_local_hugging_face_cache(tmp_path, monkeypatch, capsys):
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/config.json}."""
    cache = tmp_path / "hub"
    repo = cache / "models--Qwen--Qwen2-57B-A14B-Instruct"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text(json.dumps(model_preset("Qwen2-57B-A14B-Instruct").config))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    base = ["--hardware", "H800", "--tp", "2", "--alpha", "0.8", "--gamma", "4", "--batch-sizes", "16", "--json"]
    rc, out, err = run(capsys, "predict", "--target", "Qwen/Qwen2-57B-A14B-Instruct", *base)
    assert rc == 0, err
    by_id = json.loads(out)
    rc, out, _ = run(capsys, "predict", "--target", "Qwen2-57B-A14B-Instruct", *base)
    assert by_id["rows"] == json.loads(out)["rows"] and by_id["context"]["target"] == "Qwen2-57B-A14B-Instruct"
    rc, out, err = run(capsys, "predict", "--target", "Qwen/Qwen2-57B-A14B-Instruct@abc123", *base)
    assert rc == 0, err
    rc, out, err = run(capsys, "predict", "--target", "Qwen/Qwen3-30B-A3B", *base)
    assert rc == 2 and f"not in the local Hugging Face cache (looked in {cache})" in err and err.count("\n") == 1


def test_deployable_schedule_uses_few_draft_lengths(capsys):
    args = ["schedule", "--target", "Qwen3-30B-A3B", "--hardware", "H100-SXM", "--draft-kind", "eagle", "--alpha",
            "0.7", "--max-batch-size", "128", "--format", "vllm-table"]
    rc, out, _ = run(capsys, *args)
    full = json.loads(out)["num_speculative_tokens_per_batch_size"]
    assert rc == 0 and len({k for _, _, k in full}) > 2
    rc, out, err = run(capsys, *args, "--max-distinct", "2", "--min-gain", "0.05")
    few = json.loads(out)["num_speculative_tokens_per_batch_size"]
    assert rc == 0 and len({k for _, _, k in few}) <= 2, err
    assert few[0][0] == 1 and few[-1][1] == full[-1][1]
    # every batch size keeps at least 95 % of its best speedup: check against the predictions
    from moesd.perf.schedule import deployable_gammas

    speed = np.array([[1.0, 2.0, 1.5], [1.2, 1.9, 2.0], [0.9, 1.0, 2.2]])  # gammas 1, 2, 3 over three B
    chosen, loss = deployable_gammas([1, 2, 3], speed, 2, 0.05)
    assert len(chosen) <= 2 and loss <= 0.05 + 1e-9
    got = np.vstack([np.ones((1, 3)), speed])[[[0, 1, 2, 3].index(g) for g in chosen]].max(axis=0)
    assert np.all(got >= 0.95 * np.maximum(speed.max(axis=0), 1.0) - 1e-9)
    rc, out, err = run(capsys, *args, "--max-distinct", "1", "--min-gain", "0.0")
    assert rc == 2 and "raise --min-gain or --max-distinct" in err and err.count("\n") == 1
    rc, out, err = run(capsys, *args, "--max-distinct", "0")
    assert rc == 2 and "--max-distinct must be >= 1" in err


def test_trtllm_schedule_follows_its_rules(capsys):
    """TensorRT-LLM: keys are batch-size lower bounds, {1: max_draft_len} is required, nothing drafts more."""
    args = ["schedule", "--target", "Qwen2-57B-A14B-Instruct", "--draft", "Qwen2-0.5B-Instruct", "--hardware", "H800",
            "--tp", "2", "--engine", "vllm-v0", "--alpha", "0.85", "--max-batch-size", "128"]
    rc, out, err = run(capsys, *args, "--format", "trtllm")
    assert rc == 0, err
    cfg = json.loads(out)
    sched = {int(k): v for k, v in cfg["draft_len_schedule"].items()}
    assert sched[1] == cfg["max_draft_len"] >= 1 and max(sched.values()) == cfg["max_draft_len"]
    assert sorted(sched) == list(sched) and all(sched[a] != sched[b] for a, b in zip(sorted(sched), sorted(sched)[1:]))
    rc, out, _ = run(capsys, *args, "--format", "vllm-table")
    rows = json.loads(out)["num_speculative_tokens_per_batch_size"]
    # above batch size 1 both agree wherever vLLM's choice does not exceed TensorRT-LLM's cap
    keys = sorted(sched)
    for start, end, k in rows:
        for b in (start, end):
            if b > 1 and k <= cfg["max_draft_len"]:
                assert sched[max(x for x in keys if x <= b)] == k
