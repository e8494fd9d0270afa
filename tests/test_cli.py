"""The command line: outputs, files, and one-line errors with exit code 2."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from moesd.perf.hardware import hardware_preset
from moesd.perf.model_presets import MODEL_PRESETS, model_preset
from moesd.perf.prior import physical_prior
from moesd.perf.speedup import speedup
from moesd.perf.step_time import StepContext, step_times
from cli_helpers import run  # noqa: E402

QWEN_ARGS = ["--target", "Qwen2-57B-A14B-Instruct", "--draft", "Qwen2-0.5B-Instruct", "--hardware", "H800", "--tp", "2"]


def test_presets(capsys):
    rc, out, _ = run(capsys, "presets")
    assert rc == 0 and all(name in out for name in MODEL_PRESETS) and "H800" in out
    rc, out, _ = run(capsys, "presets", "--json")
    data = json.loads(out)
    assert {m["name"] for m in data["models"]} == set(MODEL_PRESETS)
    assert all(h["source"] for h in data["hardware"])


def test_experts(capsys):
    rc, out, _ = run(capsys, "experts", "--num-experts", "64", "--top-k", "8", "--tokens", "1,2,4")
    assert rc == 0 and "T_thres" in out and "23 tokens" in out
    rc, out, _ = run(capsys, "experts", "--target", "Mixtral-8x7B-Instruct-v0.1", "--tokens", "1-4", "--json")
    data = json.loads(out)
    assert data["saturation_tokens"] == 11 and [r["tokens"] for r in data["rows"]] == [1, 2, 3, 4]
    assert data["rows"][0]["active_experts"] == 2 and data["rows"][0]["tokens_per_expert"] == 1


def test_predict_json_and_plot(capsys, tmp_path):
    png = tmp_path / "p.png"
    rc, out, _ = run(capsys, "predict", *QWEN_ARGS, "--sigma", "0.9", "--gamma", "2,3,4", "--json", "--plot", str(png))
    assert rc == 0
    data = json.loads(out)
    assert len(data["rows"]) == 19 * 3
    assert set(data["rows"][0]) >= {"batch_size", "gamma", "active_experts_decode", "active_experts_verify",
                                    "target_decode_s", "target_verify_s", "draft_s", "reject_s",
                                    "target_efficiency", "speedup"}
    s = data["summary"]
    assert s["peak_gamma"] == 4 and 1 < s["peak_batch_size"] < 100
    assert len(s["best_gamma"]) == 19 and s["per_gamma"]["4"]["band_batch_sizes"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_table(capsys):
    rc, out, _ = run(capsys, "predict", *QWEN_ARGS, "--alpha", "0.8", "--batch-sizes", "1,8,64", "--gamma", "1-3",
                     "--expert-budget", "32")
    assert rc == 0 and "peak speedup" in out and "best gamma per batch size" in out and "not lossless" in out


def test_fit_then_predict_with_params(capsys, tmp_path):
    hw = hardware_preset("H800")
    target, draft = model_preset("Qwen2-57B-A14B-Instruct").arch(), model_preset("Qwen2-0.5B-Instruct").arch()
    params = physical_prior(target, hw, 2, draft)
    ctx = StepContext(hw.ridge_point_flops_per_byte, 2.0)
    rows = []
    for b in [1, 2, 4, 8, 16, 24, 32, 48, 64, 100]:
        for g in (2, 4):
            t = step_times(params, ctx, np.array([b]), np.array([g]), 64, 8)
            sp = speedup(0.85, g, t["target_decode_s"], t["target_verify_s"], t["draft_s"], t["reject_s"])
            rows.append({"batch_size": b, "gamma": g, "sigma": 0.85, "speedup": float(sp[0]),
                         **{k: float(t[k][0]) for k in ("target_decode_s", "target_verify_s", "draft_s", "reject_s")}})
    meas = tmp_path / "m.jsonl"
    meas.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_file = tmp_path / "params.json"
    rc, out, err = run(capsys, "fit", str(meas), "--target", "Qwen2-57B-A14B-Instruct", "--draft",
                       "Qwen2-0.5B-Instruct", "--hardware", "H800", "--tp", "2", "-o", str(out_file))
    assert rc == 0, err
    assert "held-out (leave_batch_size_out)" in out and "RMSE" in out
    saved = json.loads(out_file.read_text())
    assert saved["fit"]["max_abs_pct_error"] < 1.0 and saved["context"]["verify_convention"] == "engine"
    rc, out, _ = run(capsys, "predict", *QWEN_ARGS, "--sigma", "0.85", "--gamma", "4", "--batch-sizes", "32",
                     "--params", str(out_file), "--json")
    pred = json.loads(out)["rows"][0]["speedup"]
    assert pred == pytest.approx(next(r["speedup"] for r in rows if r["batch_size"] == 32 and r["gamma"] == 4),
                                 rel=0.01)
    rc, out, _ = run(capsys, "fit", str(meas), "--target", "Qwen2-57B-A14B-Instruct", "--draft",
                     "Qwen2-0.5B-Instruct", "--hardware", "H800", "--tp", "2", "--stride", "2", "--json")
    assert "stride_rest" in json.loads(out)["held_out"]


def test_schedule_vllm(capsys, tmp_path):
    rc, out, _ = run(capsys, "schedule", *QWEN_ARGS, "--alpha", "0.7", "--gamma", "1-5", "--max-batch-size", "1024")
    table = json.loads(out)["num_speculative_tokens_per_batch_size"]
    # 57.4 GB of target weights over 2 x 80 GiB, the 1 GB draft on device 0, and 1,024 tokens of KV per
    # sequence (28.7 kB per token per device + 12.3 kB for the draft): 450 sequences fit in 90 % of memory.
    assert table[0][0] == 1 and table[-1][1] == 450 and all(len(r) == 3 for r in table)
    rc, out, _ = run(capsys, "schedule", *QWEN_ARGS, "--alpha", "0.7", "--gamma", "1-5", "--max-batch-size", "1024",
                     "--context-length", "0")
    assert json.loads(out)["num_speculative_tokens_per_batch_size"][-1][1] == 1024
    dest = tmp_path / "sched.json"
    rc, out, _ = run(capsys, "schedule", *QWEN_ARGS, "--alpha", "0.7", "-o", str(dest))
    assert rc == 0 and json.loads(dest.read_text())["num_speculative_tokens_per_batch_size"]


BAD = [
    (["predict", "--target", "Qwen9", "--hardware", "H800", "--alpha", "0.5"], "unknown model preset 'Qwen9'; valid:"),
    (["predict", *QWEN_ARGS, "--alpha", "0.5", "--gamma", "0"], "gamma must be >= 1"),
    (["predict", *QWEN_ARGS, "--alpha", "0.5", "--batch-sizes", "0,4"], "batch size must be >= 1"),
    (["predict", *QWEN_ARGS, "--sigma", "0"], "sigma must lie in (0, 1]"),
    (["predict", *QWEN_ARGS, "--sigma", "1.2"], "sigma must lie in (0, 1]"),
    (["predict", *QWEN_ARGS, "--alpha", "1"], "alpha must lie in [0, 1)"),
    (["predict", *QWEN_ARGS, "--alpha", "0.5", "--expert-budget", "4"], "expert budget 4 is below the 8"),
    (["predict", "--target", "OPT-30B", "--hardware", "H800", "--alpha", "0.5", "--experts-per-token", "2"],
     "needs an MoE target"),
    (["predict", *QWEN_ARGS, "--alpha", "0.5", "--tp", "0"], "tensor-parallel degree must be >= 1"),
    (["predict", "--target", "OPT-30B", "--hardware", "B300", "--alpha", "0.5"], "unknown hardware 'B300'"),
    (["predict", "--target", "OPT-30B", "--hardware", "H800"], "one of the arguments --alpha --acceptance-rate"),
    (["predict", *QWEN_ARGS, "--alpha", "0.5", "--batch-sizes", "a,b"], "not a list of integers"),
    (["experts", "--num-experts", "8", "--top-k", "0"], "experts per token must lie in [1, 8]"),
    (["experts", "--num-experts", "8"], "give --num-experts and --top-k"),
    (["schedule", *QWEN_ARGS, "--sigma", "0.9"], "schedule needs --alpha"),
    (["schedule", *QWEN_ARGS, "--alpha", "0.9", "--max-batch-size", "0"], "--max-batch-size must lie in 1..65536"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("moesd: error: ") and message in err


def test_bad_files_leave_no_output(capsys, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "mixtral", "hidden_size": 64}')
    rc, _, err = run(capsys, "predict", "--target", str(cfg), "--hardware", "H800", "--alpha", "0.5",
                     "--plot", str(tmp_path / "x.png"))
    assert rc == 2 and "missing 'num_hidden_layers'" in err and not (tmp_path / "x.png").exists()
    meas = tmp_path / "m.csv"
    meas.write_text("batch_size,gamma,experts_per_token,num_experts,sigma,speedup\n1,2,8,64,nan,1.1\n")
    rc, _, err = run(capsys, "fit", str(meas), "--hardware", "H800", "-o", str(tmp_path / "p.json"))
    assert rc == 2 and "m.csv:2: column 'sigma' is 'nan'" in err and not (tmp_path / "p.json").exists()
    meas.write_text("batch_size,gamma,experts_per_token,num_experts,sigma,speedup\n1,2,8,64,0.9,1.1\n")
    rc, _, err = run(capsys, "fit", str(meas), "--hardware", "H800", "-o", str(tmp_path / "p.json"))
    assert rc == 2 and "1 measurements are too few for Algorithm 1" in err and not (tmp_path / "p.json").exists()
    rc, _, err = run(capsys, "fit", str(meas))
    assert rc == 2 and "fit needs --hardware" in err
    rc, _, err = run(capsys, "predict", *QWEN_ARGS, "--alpha", "0.5", "--params", str(meas))
    assert rc == 2 and "not a valid parameter file" in err
    rc, _, err = run(capsys, "schedule", *QWEN_ARGS, "--alpha", "0.5", "-o", str(tmp_path / "no" / "s.json"))
    assert rc == 2 and "does not exist" in err


def test_console_script_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "moesd.cli", "predict", "--target", "x.json", "--hardware", "H800",
                           "--alpha", "0.3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "moesd: error: config file not found: x.json"


def test_calibrate_writes_a_usable_hardware_file(capsys, tmp_path):
    dest = tmp_path / "cpu.json"
    rc, out, _ = run(capsys, "calibrate", "--numpy", "--repeats", "1", "-o", str(dest))
    assert rc == 0 and "GB/s" in out
    hw = json.loads(dest.read_text())
    # The measured values depend on the machine and its load: check the file's form, not the speed.
    for key in ("memory_bandwidth_bytes_per_s", "peak_bf16_flops_per_s"):
        assert isinstance(hw[key], float) and math.isfinite(hw[key]) and hw[key] > 0
    assert hw["name"] == "cpu-calibrated" and "numpy" in hw["source"]
    rc, out, _ = run(capsys, "predict", "--target", "OLMoE-1B-7B", "--hardware", str(dest), "--alpha", "0.7",
                     "--gamma", "3", "--batch-sizes", "1,16", "--json")
    assert rc == 0 and json.loads(out)["context"]["hardware"] == "cpu-calibrated"


def test_load_bound_factor(capsys, tmp_path):
    meas = tmp_path / "m.csv"
    meas.write_text("batch_size,gamma,experts_per_token,num_experts,sigma,speedup\n1,2,8,64,0.9,1.1\n")
    rc, _, err = run(capsys, "fit", str(meas), "--hardware", "H800", "--load-bound-factor", "0.5")
    assert rc == 2 and "--load-bound-factor must be >= 1" in err
