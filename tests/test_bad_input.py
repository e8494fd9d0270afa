"""Every class of bad input from the reliability review, each with the exact input that used to fail: one line
`moesd: error: ...`, exit 2, no traceback, no partial file, no completed point lost."""

import json
import os
from pathlib import Path

import pytest

from cli_helpers import run, one_line  # noqa: E402

torch = pytest.importorskip("torch")

QWEN = ["--target", "Qwen2-57B-A14B-Instruct", "--hardware", "H800", "--tp", "2", "--alpha", "0.7"]


def tiny_config(tmp_path, **overrides):
    cfg = dict(model_type="llama", vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512)
    cfg.update(overrides)
    d = tmp_path / "cfg"
    d.mkdir(exist_ok=True)
    path = d / "config.json"
    path.write_text(json.dumps(cfg))
    return path


# --- 5: valid JSON of the wrong type, non-finite values, deep nesting, bad bytes ---------------------------
@pytest.mark.parametrize("text, message", [
    ('"hidden_size": NaN', "NaN is not allowed"),
    ('"hidden_size": 1e400', "out of range"),
    ('"model_type": ["llama"]', "'model_type' must be a string"),
    ('"head_dim": "16"', "'head_dim' must be an integer"),
])
def test_config_json_of_the_wrong_type(tmp_path, capsys, text, message):
    base = tiny_config(tmp_path).read_text()
    key = text.split(":")[0]
    raw = json.loads(base)
    body = ", ".join(f'"{k}": {json.dumps(v)}' for k, v in raw.items() if f'"{k}"' != key)
    path = tmp_path / "c.json"
    path.write_text("{" + body + ", " + text + "}")
    one_line(*run(capsys, "predict", "--target", path, "--hardware", "H800", "--alpha", "0.5"), message)


def test_deeply_nested_json_and_binary_files(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    one_line(*run(capsys, "predict", "--target", deep, "--hardware", "H800", "--alpha", "0.5"), "nested deeper than")
    binary = tmp_path / "params.json"
    binary.write_bytes(bytes(range(256)) * 3)
    one_line(*run(capsys, "predict", *QWEN, "--params", binary), "not UTF-8 text")
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(b'{"prompt": "\xff\xfe"}\n')
    one_line(*run(capsys, "generate", "--target", tiny_config(tmp_path), "--prompts", prompts, "--gamma", "0"),
             "not UTF-8 text")


def test_csv_columns(tmp_path, capsys):
    header = "batch_size,gamma,speedup,sigma,experts_per_token,num_experts"
    tp = tmp_path / "tp.csv"
    tp.write_text(header + ",tp\n1,2,1.2,0.9,8,64,x\n2,2,1.3,0.9,8,64,x\n")
    one_line(*run(capsys, "fit", tp, "--hardware", "H800"), "column 'tp' must be an integer, got 'x'")
    long = tmp_path / "long.csv"
    long.write_text(header + "\n" + "1" * 200000 + ",2,1.2,0.9,8,64\n")
    one_line(*run(capsys, "fit", long, "--hardware", "H800"), "malformed CSV")
    dup = tmp_path / "dup.csv"
    dup.write_text(header + "\n" + "1,2,1.2,0.9,8,64\n" * 12)
    one_line(*run(capsys, "fit", dup, "--hardware", "H800"), "duplicates")
    # A byte-order mark (spreadsheets write one) is accepted, not refused.
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeff" + header + "\n" + "".join(f"{b},2,{1 + b / 100},0.9,8,64\n"
                                                        for b in (1, 2, 4, 8, 16, 32, 64, 80, 100, 120)))
    rc, out, err = run(capsys, "fit", bom, "--hardware", "H800", "--json")
    assert rc == 0 and json.loads(out)["fit"]["n_points"] == 10, err
    one_line(*run(capsys, "fit", bom, "--hardware", "H800", "--stride", "0"), "--stride must be >= 2")


# --- 3, 4, 11: outputs ---------------------------------------------------------------------------------
def test_unwritable_outputs_are_one_line_and_checked_first(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "no" / "such" / "dir"
    one_line(*run(capsys, "predict", *QWEN, "--plot", missing / "x.png"), "does not exist")
    one_line(*run(capsys, "predict", *QWEN, "--plot", tmp_path / "x.gif"), "name a .png, .svg or .pdf")
    one_line(*run(capsys, "schedule", *QWEN, "-o", tmp_path), "is a directory")
    one_line(*run(capsys, "experts", "--num-experts", "8", "--top-k", "2", "--plot", missing / "e.png"),
             "does not exist")
    one_line(*run(capsys, "calibrate", "--numpy", "--repeats", "1", "-o", missing / "hw.json"), "does not exist")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    results = tmp_path / "r.jsonl"
    results.write_text("")
    one_line(*run(capsys, "report", results, "-o", a_file), "it is a file, not a directory")
    # The expensive commands check their output before loading anything.
    import moesd.engine.loading as loading

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(loading, "load_model", no_load)
    one_line(*run(capsys, "budget", "calibrate", "--target", tiny_config(tmp_path), "--draft-method", "ngram",
                  "--max-kl", "0.1", "-o", missing / "c.json"), "does not exist")
    one_line(*run(capsys, "bench", "--target", tiny_config(tmp_path), "--draft-method", "ngram", "--batch-sizes",
                  "1", "--gammas", "2", "-o", missing / "r.jsonl"), "does not exist")
    one_line(*run(capsys, "train", "target", "--out", a_file, "--steps", "1"), "is a file, not a directory")


def test_files_follow_the_umask_and_symlinks_stay(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        dest = tmp_path / "s.json"
        assert run(capsys, "schedule", *QWEN, "--max-batch-size", "4", "-o", dest)[0] == 0
        assert dest.stat().st_mode & 0o777 == 0o644
        real = tmp_path / "real.json"
        link = tmp_path / "link.json"
        real.write_text("old")
        link.symlink_to(real)
        assert run(capsys, "schedule", *QWEN, "--max-batch-size", "4", "-o", link)[0] == 0
        assert link.is_symlink() and "num_speculative_tokens_per_batch_size" in real.read_text()
    finally:
        os.umask(old)


# --- 9, 12: sizes and impossible values ----------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["predict", *QWEN, "--batch-sizes", "1-1000000000"], "has more than 65536 values"),
    (["schedule", *QWEN, "--max-batch-size", "1000000000"], "--max-batch-size must lie in 1..65536"),
    (["experts", "--num-experts", "64", "--top-k", "8", "--tau", "nan"], "tau must lie in (0, 1)"),
    (["predict", *QWEN[:-2], "--alpha", "nan"], "alpha must lie in [0, 1)"),
    (["budget", "calibrate", "--target", "x.json", "--draft-method", "ngram", "--max-kl", "nan"],
     "--max-kl must be a finite number"),
])
def test_sizes_and_impossible_values(capsys, argv, message, tmp_path, monkeypatch):
    if argv[0] == "budget":  # needs a loadable target: the floor check runs before any generation
        argv = [a if a != "x.json" else str(tiny_config(tmp_path, model_type="qwen3_moe", num_experts=8,
                                                         num_experts_per_tok=2, moe_intermediate_size=32,
                                                         head_dim=16)) for a in argv]
    one_line(*run(capsys, *argv), message)


def test_engine_sizes_and_sampling(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    base = ["generate", "--target", cfg, "--prompt", "hi", "--max-new-tokens", "2"]
    one_line(*run(capsys, *base, "--gamma", "0", "--batch-size", "1000000000"), "batch size must lie in 1..4096")
    one_line(*run(capsys, *base, "--draft-method", "ngram", "--temperature", "nan"), "temperature must be a finite")
    one_line(*run(capsys, *base, "--draft-method", "ngram", "--temperature", "1e-50"), "would overflow the softmax")
    bench = ["bench", "--target", cfg, "--draft-method", "ngram", "--batch-sizes", "1", "--gammas", "2",
             "-o", tmp_path / "r.jsonl"]
    one_line(*run(capsys, *bench, "--temperatures", "nan"), "temperature must be a finite")
    one_line(*run(capsys, *bench, "--max-prompt-tokens", "-1"), "--max-prompt-tokens must be >= 1")
    assert not (tmp_path / "r.jsonl").exists()


# --- 6: model loading failures ---------------------------------------------------------------------------
def test_model_loading_failures(tmp_path, capsys):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = tiny_config(tmp_path)
    model_dir = tmp_path / "model"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg.parent)).save_pretrained(model_dir)
    capsys.readouterr()  # transformers' own save progress
    raw = json.loads((model_dir / "config.json").read_text())
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    (mismatch / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    (mismatch / "config.json").write_text(json.dumps(dict(raw, hidden_size=128, intermediate_size=256)))
    one_line(*run(capsys, "generate", "--target", mismatch, "--prompt", "hi", "--gamma", "0"), "cannot load")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    data = (model_dir / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    (truncated / "config.json").write_text(json.dumps(raw))
    one_line(*run(capsys, "generate", "--target", truncated, "--prompt", "hi", "--gamma", "0"), "cannot load")
    k_over_e = tiny_config(tmp_path, model_type="qwen3_moe", num_experts=4, num_experts_per_tok=6,
                           moe_intermediate_size=32, head_dim=16)
    one_line(*run(capsys, "generate", "--target", k_over_e, "--prompt", "hi", "--gamma", "0"),
             "6 experts out of 4: impossible")


# --- 1, 2: shared results files ---------------------------------------------------------------------------
def _cfg(tiny_dir, tmp_path, **kw):
    from moesd.bench.sweep import BenchConfig

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"token_ids": [5 + i, 6, 7, 8 + i]}) + "\n" for i in range(4)))
    base = dict(target=str(tiny_dir("qwen3_moe")), workload=str(prompts), batch_sizes=(1,), gammas=(2,),
                draft_method="synthetic", alpha=0.7, routings=("uniform",), repeats=1, warmup=0, max_new_tokens=7,
                dtype="fp32", hardware="cpu")
    base.update(kw)
    return BenchConfig(**base)


def test_two_sweeps_on_one_file_cannot_both_write(tiny_dir, tmp_path, capsys):
    from moesd.bench.results_file import ResultsFile

    out = tmp_path / "r.jsonl"
    first = ResultsFile(out, resume=False)  # a sweep in progress holds the file
    try:
        one_line(*run(capsys, "bench", "--target", tiny_dir("qwen3_moe"), "--draft-method", "synthetic", "--alpha",
                      "0.7", "--batch-sizes", "1", "--gammas", "2", "--max-new-tokens", "7", "--dtype", "fp32",
                      "-o", out), "is being written by another moesd bench")
    finally:
        first.close()
    assert not out.exists()


def test_resume_with_other_settings_refuses_unless_append(tiny_dir, tmp_path):
    import io

    from moesd.bench.sweep import run_sweep
    from moesd.errors import MoesdError

    out = tmp_path / "r.jsonl"
    run_sweep(_cfg(tiny_dir, tmp_path), str(out), progress=io.StringIO())
    before = out.read_text()
    with pytest.raises(MoesdError, match="other settings.*max_new_tokens: 7 there, 9 here.*--append"):
        run_sweep(_cfg(tiny_dir, tmp_path, max_new_tokens=9), str(out), resume=True, progress=io.StringIO())
    assert out.read_text() == before  # nothing lost, nothing added
    run_sweep(_cfg(tiny_dir, tmp_path, max_new_tokens=9), str(out), append=True, progress=io.StringIO())
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[0] + "\n" == before


# --- 8: report ---------------------------------------------------------------------------------------------
def test_report_refuses_records_it_cannot_draw_and_never_mixes_old_and_new(tiny_dir, tmp_path, capsys,
                                                                          monkeypatch):
    import io

    from moesd.bench import report
    from moesd.bench.sweep import run_sweep

    out = tmp_path / "r.jsonl"
    run_sweep(_cfg(tiny_dir, tmp_path, batch_sizes=(1, 2)), str(out), progress=io.StringIO())
    capsys.readouterr()
    rec = json.loads(out.read_text().splitlines()[0])
    for bad, message in ((dict(rec, target_verify_s=0.0), "must be > 0"),
                         (dict(rec, speedup="fast"), "speedup must be a finite number"),
                         ({"batch_size": 1, "gamma": 2}, "not `moesd bench` output")):
        f = tmp_path / "bad.jsonl"
        f.write_text(json.dumps(bad) + "\n")
        one_line(*run(capsys, "report", f, "-o", tmp_path / "rep"), message)
    rep = tmp_path / "rep2"
    assert run(capsys, "report", out, "-o", rep)[0] == 0
    old = {p.name: p.read_bytes() for p in rep.iterdir()}
    monkeypatch.setattr(report, "fig_efficiency", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    one_line(*run(capsys, "report", out, "-o", rep), "No space left")
    assert {p.name: p.read_bytes() for p in rep.iterdir()} == old  # the previous report, whole
    assert not [p for p in Path(rep).iterdir() if p.name.startswith(".report-")]


# --- 10: train ---------------------------------------------------------------------------------------------
def test_train_inputs(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a", "b", "c"):
        (corpus / f"{name}.py").write_text(f"{name} = 1\n")
    base = ["train", "target", "--out", tmp_path / "m", "--steps", "2", "--corpus", corpus, "--quiet"]
    one_line(*run(capsys, *base, "--lr", "nan"), "--lr a finite number > 0")
    one_line(*run(capsys, *base, "--set", "num_experts_per_tok=99"), "experts per token exceeds")
    one_line(*run(capsys, *base, "--vocab-size", "300", "--seq-len", "4096"), "fewer than --seq-len 4096")
