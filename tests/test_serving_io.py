"""Serving engines' measurements in (`moesd import`), their configs out (`moesd schedule --format ...`).

Fixtures in tests/fixtures/serving/ are written in the formats the engines' sources define (keys and units named
in bench/serving_import.py's docstring); their numbers are plausible, not measured.
"""

import json
from pathlib import Path

import pytest

from moesd.bench.prometheus import Snapshot
from cli_helpers import run, one_line  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "serving"
VLLM_SD = [FIX / f"vllm_serve_eagle3_c{c}.json" for c in (1, 8, 32)]
VLLM_OFF = [FIX / f"vllm_serve_off_c{c}.json" for c in (1, 8, 32)]
TARGET = ["--target", "Qwen3-30B-A3B", "--hardware", "H100"]


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_vllm_serve_pairs_sd_with_baseline(capsys, tmp_path):
    out = tmp_path / "points.jsonl"
    rc, text, err = run(capsys, "import", *VLLM_SD, *VLLM_OFF, *TARGET, "-o", out)
    assert rc == 0, err
    points = lines(out)
    assert [p["batch_size"] for p in points] == [1, 8, 32]
    p1 = points[0]
    raw_sd, raw_off = json.loads(VLLM_SD[0].read_text()), json.loads(VLLM_OFF[0].read_text())
    # gamma = number of per-position rates; mean acceptance length as vLLM reports it (bonus counted).
    assert p1["gamma"] == 3 and p1["mean_acceptance_length"] == raw_sd["spec_decode_acceptance_length"]
    assert p1["sigma"] == pytest.approx(raw_sd["spec_decode_acceptance_length"] / 4)
    assert p1["acceptance_rate"] == pytest.approx(raw_sd["spec_decode_acceptance_rate"] / 100)
    assert p1["speedup"] == pytest.approx(raw_off["mean_tpot_ms"] / raw_sd["mean_tpot_ms"])
    assert p1["target_decode_s"] == pytest.approx(raw_off["median_itl_ms"] / 1e3)
    assert p1["sd_round_s"] == pytest.approx(raw_sd["median_itl_ms"] / 1e3)
    assert (p1["num_experts"], p1["experts_per_token"], p1["hardware"]) == (128, 8, "H100")
    # alpha: the i.i.d. inversion of the mean acceptance length at gamma 3.
    a = p1["alpha"]
    assert 1 + a + a**2 + a**3 == pytest.approx(p1["mean_acceptance_length"], rel=1e-6)
    assert "speedup" in text and "wrote 3 measurement(s)" in text


def test_round_trip_import_fit_predict_schedule(capsys, tmp_path):
    points, params, config = tmp_path / "p.jsonl", tmp_path / "params.json", tmp_path / "spec.json"
    assert run(capsys, "import", *VLLM_SD, *VLLM_OFF, *TARGET, "-o", points)[0] == 0
    rc, text, err = run(capsys, "fit", points, *TARGET, "--draft-kind", "eagle", "-o", params)
    assert rc == 0, err
    fitted = json.loads(params.read_text())
    assert "target_fixed_s" in fitted["fit"]["free_parameters"] and "fitted only" in text
    # The few-point fit reproduces the imported speedups it was given (three points, stage times included).
    assert max(abs(r) for r in fitted["residual_pct"]) < 15
    rc, text, err = run(capsys, "predict", *TARGET, "--draft-kind", "eagle", "--params", params,
                        "--mean-acceptance-length", "2.85", "--measured-at-gamma", "3", "--gamma", "3",
                        "--batch-size", "1,8,32", "--json")
    assert rc == 0, err
    predicted = [r["speedup"] for r in json.loads(text)["rows"]]
    measured = [p["speedup"] for p in lines(points)]
    assert all(abs(p / m - 1) < 0.15 for p, m in zip(predicted, measured))
    rc, text, err = run(capsys, "schedule", *TARGET, "--draft-kind", "eagle", "--params", params,
                        "--spec-model", "org/eagle-head", "--mean-acceptance-length", "2.85",
                        "--measured-at-gamma", "3", "--gamma", "1,2,3,4,5", "--max-batch-size", "64", "-o", config)
    assert rc == 0, err
    spec = json.loads(config.read_text())
    rows = spec["num_speculative_tokens_per_batch_size"]
    assert spec["method"] == "eagle" and spec["model"] == "org/eagle-head"
    assert spec["num_speculative_tokens"] == max(k for _, _, k in rows)
    assert rows[0][0] == 1 and rows[-1][1] == 64 and all(a[1] + 1 == b[0] for a, b in zip(rows, rows[1:]))


def test_prometheus_window_and_latency_run(capsys, tmp_path):
    window = Snapshot.read(str(FIX / "vllm_metrics_after.txt")).window(Snapshot.read(str(FIX / "vllm_metrics_before.txt")))
    assert (window.spec.num_drafts, window.spec.num_accepted_tokens) == (2000, 3700)
    assert window.spec.accepted_per_position == {0: 1600, 1: 1200, 2: 900}
    out = tmp_path / "p.jsonl"
    rc, text, err = run(capsys, "import", FIX / "vllm_latency_eagle3_b8.json", "--baseline",
                        FIX / "vllm_latency_off_b8.json", "--metrics", FIX / "vllm_metrics_before.txt",
                        FIX / "vllm_metrics_after.txt", "--batch-size", 8, "--output-len", 128, "-o", out,
                        "--target", "Qwen3-30B-A3B")
    assert rc == 0, err
    (p,) = lines(out)
    assert p["gamma"] == 3 and p["mean_acceptance_length"] == pytest.approx(1 + 3700 / 2000)
    assert p["per_position_acceptance"] == [0.8, 0.6, 0.45]
    assert p["speedup"] == pytest.approx(3.559 / 2.245)
    # A metrics window alone is a run of its own (TPOT from the request histogram), but has no baseline.
    rc, text, err = run(capsys, "import", "--metrics", FIX / "vllm_metrics_before.txt", FIX / "vllm_metrics_after.txt",
                        "--batch-size", 8)
    assert rc == 0, err
    (p,) = [json.loads(x) for x in text.splitlines()]
    assert p["sd_tpot_s"] == pytest.approx(64 * 0.00877 / 64) and "speedup" not in p


def test_sglang_serving_with_server_info_and_one_batch(capsys, tmp_path):
    out = tmp_path / "p.jsonl"
    rc, text, err = run(capsys, "import", FIX / "sglang_bench_serving_eagle.jsonl", "--baseline",
                        FIX / "sglang_bench_serving_off.jsonl", "--server-info", FIX / "sglang_server_info.json",
                        "-o", out, *TARGET)
    assert rc == 0, err
    points = lines(out)
    assert [(p["batch_size"], p["gamma"]) for p in points] == [(1, 3), (8, 3), (32, 3)]
    assert all(p["engine"] == "sglang" and p["mean_acceptance_length"] == 2.85 for p in points)
    # bench_one_batch decode steps as the baseline instead: its step time is the decode time.
    rc, text, err = run(capsys, "import", FIX / "sglang_bench_serving_eagle.jsonl", FIX / "sglang_one_batch.jsonl",
                        "--gamma", 3, "-o", out)
    assert rc == 0, err
    points = lines(out)
    one_batch = [json.loads(x) for x in (FIX / "sglang_one_batch.jsonl").read_text().splitlines()]
    assert points[0]["target_decode_s"] == one_batch[0]["median_decode_latency"]


def test_schedule_formats(capsys):
    base = [*TARGET, "--draft-kind", "eagle", "--spec-model", "org/head", "--alpha", "0.8", "--gamma", "1,2,3,4",
            "--max-batch-size", "64"]
    rc, text, err = run(capsys, "schedule", *base, "--format", "vllm-ranges")
    assert rc == 0, err
    ranges = json.loads(text)["num_speculative_tokens_per_batch_size"]
    assert all(isinstance(k, str) and "-" in k for k in ranges) and list(ranges)[0].startswith("1-")
    rc, text, err = run(capsys, "schedule", *base, "--format", "vllm-dynamic")
    assert rc == 0, err
    dyn = json.loads(text)
    # vLLM's manager asserts: batch sizes 1 and its maximum present, K = 0 and 1 for each, sorted K keys,
    # one acceptance rate per position up to the maximum K.
    assert "1" in dyn["batch_stats"] and "64" in dyn["batch_stats"]
    for row in dyn["batch_stats"].values():
        ks = [int(k) for k in row]
        assert ks == sorted(ks) and ks[:2] == [0, 1] and all(v > 0 for v in row.values())
    assert len(dyn["acceptance_rate_per_pos"]) == dyn["max_num_speculative_tokens"] == 4
    assert dyn["acceptance_rate_per_pos"][0] == pytest.approx(0.8) and dyn["acceptance_rate_per_pos"][1] == pytest.approx(0.64)
    # The manager's own choice (max acceptance length / ITL) from these stats agrees with our table at B=1.
    stats = dyn["batch_stats"]["1"]
    al = lambda k: 1 + sum(dyn["acceptance_rate_per_pos"][:k])
    best_k = max(range(0, 5), key=lambda k: al(k) / stats[str(k)])
    rc, text, err = run(capsys, "schedule", *base, "--format", "vllm")
    assert json.loads(text)["num_speculative_tokens_per_batch_size"][0][2] == best_k
    rc, text, err = run(capsys, "schedule", *base, "--format", "sglang")
    assert rc == 0, err
    sg = json.loads(text)
    assert "--speculative-adaptive" in sg["server_args"] and "1" in sg["adaptive_config"]
    steps = sg["server_args"][sg["server_args"].index("--speculative-num-steps") + 1]
    assert int(steps) == max(t["candidate_steps"][0] for t in sg["adaptive_config"].values())


@pytest.mark.parametrize("argv, message", [
    (["import"], "nothing to import"),
    (["import", FIX / "vllm_serve_eagle3_c1.json"], "speedup"),  # a note, not an error: checked below
    (["import", FIX / "vllm_metrics_after.txt"], "Prometheus snapshot goes to --metrics"),
    (["import", FIX / "vllm_latency_eagle3_b8.json"], "pass --batch-size and --output-len"),
    (["import", FIX / "vllm_serve_eagle3_c1.json", "--gamma", "5"], "conflicting draft lengths"),
    (["import", "--baseline", FIX / "vllm_serve_eagle3_c1.json"], "given as a baseline but it speculated"),
    (["import", FIX / "vllm_serve_eagle3_c8.json", "--batch-size", "4"], "contradicts the file's max_concurrency"),
    (["import", FIX / "sglang_bench_serving_eagle.jsonl"], "pass --gamma"),
    (["import", "--metrics", FIX / "vllm_metrics_after.txt", FIX / "vllm_metrics_before.txt", "--batch-size", "8"],
     "give BEFORE then AFTER"),
    (["import", FIX / "vllm_serve_eagle3_c1.json", FIX / "vllm_serve_eagle3_c1.json"], "a second SD run"),
    (["import", FIX / "vllm_serve_off_c1.json"], "no run that speculated"),
    (["import", FIX / "vllm_serve_eagle3_c1.json", "--hardware", "H1OO"], "did you mean H100-SXM"),
    (["schedule", *TARGET, "--draft-kind", "eagle", "--alpha", "0.8", "--format", "vllm"], "--spec-model"),
])
def test_import_bad_inputs(capsys, tmp_path, argv, message):
    out = tmp_path / "out.jsonl"
    rc, text, err = run(capsys, *argv, *(["-o", out] if argv[0] == "import" else []))
    if message == "speedup":  # unpaired SD run: written, with a note that fit needs a baseline
        assert rc == 0 and "no SD-off run at batch size 1" in text and out.exists()
        return
    one_line(rc, text, err, message)
    assert not out.exists()


def test_malformed_result_files(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    for content, message in [
        ('{"max_concurrency": 4, "mean_tpot_ms": NaN, "model_id": "m"}', "malformed JSON"),
        ('{"max_concurrency": 4, "mean_tpot_ms": -1, "model_id": "m", "spec_decode_acceptance_length": 2}',
         "'mean_tpot_ms' must be a positive"),
        ('{"hello": 1}', "not a result moesd can import"),
        ('{"max_concurrency": 2.5, "mean_tpot_ms": 3, "model_id": "m", "spec_decode_acceptance_length": 2}',
         "must be an integer"),
        ('{"max_concurrency": 2, "mean_tpot_ms": 3, "model_id": "m", "spec_decode_acceptance_length": 9, '
         '"spec_decode_per_position_acceptance_rates": [0.5, 0.4]}', "outside [1, gamma + 1 = 3]"),
    ]:
        bad.write_text(content)
        out = tmp_path / "o.jsonl"
        one_line(*run(capsys, "import", bad, "-o", out), message)
        assert not out.exists()
    metrics = tmp_path / "m.txt"
    metrics.write_text('vllm:spec_decode_num_drafts_total{engine="0" 5\n')
    one_line(*run(capsys, "import", "--metrics", metrics, "--batch-size", 2), "not a Prometheus sample line")


def test_tensor_parallel_prediction_states_its_link_traffic(capsys):
    rc, text, err = run(capsys, "predict", "--target", "Qwen3-30B-A3B", "--hardware", "H100", "--tp", "2", "--alpha",
                        "0.7", "--gamma", "3", "--batch-sizes", "1")
    # 48 layers x 2 all-reduces x 2048 x 2 bytes x 2 (tp - 1) / tp = 393 kB per token; 450 GB/s NVLink.
    assert rc == 0 and "393 kB per token, 0.87 us per token on 450 GB/s" in text
    rc, text, err = run(capsys, "predict", "--target", "Qwen3-30B-A3B", "--hardware", "L40", "--tp", "2", "--alpha",
                        "0.7", "--gamma", "3", "--batch-sizes", "1")
    assert rc == 0 and "no scale-up link" in text
