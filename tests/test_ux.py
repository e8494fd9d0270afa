"""What a user of vLLM / transformers expects of a command-line tool: help, version, formats, notices."""

import argparse
import json

import pytest

from moesd.cli import build_parser, main
from cli_helpers import run  # noqa: E402

QWEN = ["--target", "Qwen2-57B-A14B-Instruct", "--hardware", "H800", "--tp", "2", "--alpha", "0.7"]


def test_bare_command_prints_help_and_version(capsys):
    rc, out, _ = run(capsys)
    assert rc == 0 and out.startswith("usage: moesd") and "examples:" in out
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("moesd ")


def test_every_option_has_help_and_every_command_examples():
    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if name != "budget":
                        assert sub.epilog and "examples:" in sub.epilog, name
                    walk(sub, path + [name])
            elif action.dest != "help":
                assert action.help, (path, action.option_strings or action.dest)

    walk(build_parser(), [])


def test_usage_errors_are_one_line_without_a_doubled_prefix(capsys):
    rc, out, err = run(capsys, "predict", "--alpha", "x")
    assert rc == 2 and err.startswith("moesd: error: predict: argument --alpha") and "moesd predict:" not in err


def test_defaults_are_shown(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "(default: 1024)" in out and "(default: bf16)" in out and "(default: None)" not in out


@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_plot_writes_the_format_its_extension_names(tmp_path, capsys, ext, magic):
    path = tmp_path / f"p.{ext}"
    assert run(capsys, "predict", *QWEN, "--gamma", "2", "--batch-sizes", "1,8", "--plot", path)[0] == 0
    assert path.read_bytes()[: len(magic)] == magic


def test_routing_curve_accepts_the_generate_json_it_came_from(tmp_path, capsys):
    pytest.importorskip("torch")
    cfg = tmp_path / "moe.json"
    cfg.write_text(json.dumps(dict(model_type="qwen3_moe", vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                   moe_intermediate_size=32, head_dim=16, num_experts=8, num_experts_per_tok=2,
                                   max_position_embeddings=512)))
    rc, out, err = run(capsys, "generate", "--target", cfg, "--draft-method", "synthetic", "--alpha", "0.8",
                       "--gamma", "3", "--batch-size", "2", "--prompt", "hello there", "--max-new-tokens", "8",
                       "--dtype", "fp32", "--json")
    assert rc == 0, err
    gen = tmp_path / "gen.json"
    gen.write_text(out)
    rc, out, err = run(capsys, "predict", "--target", cfg, "--hardware", "H800", "--alpha", "0.7", "--gamma", "3",
                       "--batch-sizes", "1,2", "--routing-curve", gen)
    assert rc == 0 and "expert counts from measured routing curve" in out, err


def test_a_directory_without_weights_says_it_is_random(tmp_path, capsys):
    pytest.importorskip("torch")
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(dict(model_type="llama", vocab_size=512, hidden_size=64,
                                                   num_hidden_layers=2, num_attention_heads=4,
                                                   num_key_value_heads=2, intermediate_size=128,
                                                   max_position_embeddings=512)))
    rc, out, err = run(capsys, "generate", "--target", d, "--prompt", "hi", "--gamma", "0", "--max-new-tokens", "2",
                       "--json")
    assert rc == 0 and "holds no weights: using random weights" in err
    assert json.loads(out)["metrics"]["target"]["random_weights"] is True


def test_stdout_on_a_full_disk_is_one_line(capsys, monkeypatch):
    import sys

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Full())
    rc = main(["presets"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "moesd: error: cannot write the output: No space left on device\n"


def test_report_draws_the_sparsity_panel_only_for_a_k_sweep(tmp_path, capsys):
    root = __import__("pathlib").Path(__file__).resolve().parent.parent / "results"
    rc, out, err = run(capsys, "report", root / "cpu_moe.jsonl", root / "cpu_dense.jsonl", "-o", tmp_path / "a",
                       "--quiet")
    assert rc == 0, err
    assert not (tmp_path / "a" / "sparsity.png").exists()  # one K per series: no sparsity sweep to draw
    md = (tmp_path / "a" / "report.md").read_text()
    assert "[cpu_moe]" in md and "[cpu_dense]" in md  # series of different files are never merged
    rc, out, err = run(capsys, "report", root / "cpu_moe_ksweep.jsonl", "-o", tmp_path / "b", "--quiet")
    assert rc == 0 and (tmp_path / "b" / "sparsity.png").read_bytes()[:4] == b"\x89PNG", err
