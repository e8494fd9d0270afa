"""`moesd bench` / `report`: JSONL schema, fit on bench output, resume after a kill, bad lines, write errors."""

import io
import json
import math
import os

import pytest

pytest.importorskip("torch")

from moesd.bench.report import write_report  # noqa: E402
from moesd.bench.sweep import BenchConfig, points, run_sweep  # noqa: E402
from moesd.cli import main  # noqa: E402
from moesd.errors import MoesdError  # noqa: E402


def config(tiny_dir, tmp_path, **kw):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"token_ids": [5 + i, 6, 7, 8 + i]}) + "\n" for i in range(6)))
    base = dict(target=str(tiny_dir("qwen3_moe")), workload=str(prompts), batch_sizes=(1, 3), gammas=(2, 3),
                draft_method="synthetic", alpha=0.7, routings=("uniform",), repeats=2, warmup=0, max_new_tokens=10,
                dtype="fp32", hardware="cpu")
    base.update(kw)
    return BenchConfig(**base)


SCHEMA_KEYS = {"schema", "key", "target", "batch_size", "gamma", "experts_per_token", "num_experts", "temperature",
               "routing", "speedup", "speedup_iqr", "alpha", "acceptance_rate", "sigma", "mean_acceptance_length",
               "target_decode_s", "target_verify_s", "draft_s", "reject_s", "target_decode_s_iqr",
               "active_experts_decode", "active_experts_verify", "routing_curve", "conditions"}


def test_sweep_writes_one_valid_line_per_point_and_fit_and_report_read_it(tiny_dir, tmp_path, capsys):
    # 10 points: the fit below needs as many points as the model has free parameters.
    cfg = config(tiny_dir, tmp_path, batch_sizes=(1, 2, 3, 4, 5), repeats=1)
    out = tmp_path / "r.jsonl"
    run_sweep(cfg, str(out), progress=io.StringIO())
    lines = out.read_text().splitlines()
    assert len(lines) == len(points(cfg)) == 10
    for line in lines:
        rec = json.loads(line)
        assert SCHEMA_KEYS <= set(rec)
        assert all(math.isfinite(rec[k]) and rec[k] > 0 for k in ("speedup", "target_decode_s", "target_verify_s"))
        assert rec["conditions"]["experts_implementation"] == "grouped_mm" and rec["conditions"]["git_commit"]
        assert rec["conditions"]["prompt_prompts"] == rec["batch_size"]
    # `moesd fit` reads bench output directly (target and hardware come from the lines).
    rc = main(["fit", str(out), "--routing", "uniform", "--json"])
    fitted = json.loads(capsys.readouterr().out)
    assert rc == 0 and fitted["fit"]["n_points"] == 10 and fitted["context"]["hardware"] == "cpu"
    files = write_report([str(out)], str(tmp_path / "rep"))
    assert "report.md" in files and "speedup_vs_batch.png" in files and "experts_vs_eq8.png" in files
    for f in files[1:]:
        assert (tmp_path / "rep" / f).read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "rep" / "report.md").read_text()
    # One table row per point, each with the record's own speedup and target efficiency.
    rows = [line for line in md.splitlines() if line.startswith("| qwen3_moe + synthetic (uniform routing")]
    assert len(rows) == 10
    for line in lines:
        rec = json.loads(line)
        assert rec["target_efficiency"] == pytest.approx(rec["target_decode_s"] / rec["target_verify_s"])
        assert rec["num_accepted_tokens"] <= rec["num_draft_tokens"] <= rec["gamma"] * rec["num_drafts"]
        assert rec["alpha"] == pytest.approx(rec["num_accepted_tokens"]
                                             / (rec["num_accepted_tokens"] + rec["num_rejections"]))
        cells = [f"| {rec['batch_size']} | {rec['gamma']} | {rec['speedup']:.2f} ", f"| {rec['target_efficiency']:.3f} |"]
        assert any(all(c in row for c in cells) for row in rows), cells


class _KillAfterFirstPoint(io.StringIO):
    def write(self, s):
        if s.startswith("[1/"):
            raise KeyboardInterrupt
        return super().write(s)


def test_killed_sweep_resumes_without_losing_or_repeating(tiny_dir, tmp_path):
    cfg = config(tiny_dir, tmp_path)
    out = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, str(out), progress=_KillAfterFirstPoint())
    first = out.read_text().splitlines()
    assert len(first) == 1
    with pytest.raises(MoesdError, match="exists: pass --resume"):
        run_sweep(cfg, str(out), progress=io.StringIO())
    log = io.StringIO()
    run_sweep(cfg, str(out), resume=True, progress=log)
    lines = out.read_text().splitlines()
    assert "resuming: 1 of 4" in log.getvalue() and log.getvalue().count("speedup") == 3
    assert lines[0] == first[0] and len(lines) == 4
    assert len({json.loads(line)["key"] for line in lines}) == 4


def test_corrupt_line_is_reported_and_skipped_only_on_request(tiny_dir, tmp_path):
    cfg = config(tiny_dir, tmp_path, batch_sizes=(1,), gammas=(2,))
    out = tmp_path / "r.jsonl"
    run_sweep(cfg, str(out), progress=io.StringIO())
    with open(out, "a") as f:
        f.write('{"schema": "moesd.bench/1", "truncat')
    with pytest.raises(MoesdError, match=r"r.jsonl:2: malformed or truncated JSON line"):
        run_sweep(cfg, str(out), resume=True, progress=io.StringIO())
    log = io.StringIO()
    run_sweep(config(tiny_dir, tmp_path, batch_sizes=(1, 2), gammas=(2,)), str(out), resume=True,
              skip_bad_lines=True, progress=log)
    assert "skipped corrupt lines [2]" in log.getvalue()
    assert len(out.read_text().splitlines()) == 2


def test_write_error_stops_cleanly_and_keeps_what_was_written(tiny_dir, tmp_path, monkeypatch):
    cfg = config(tiny_dir, tmp_path, batch_sizes=(1, 2), gammas=(2,))
    out = tmp_path / "r.jsonl"
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(MoesdError, match="cannot write .*No space left on device"):
        run_sweep(cfg, str(out), progress=io.StringIO())
    assert len(out.read_text().splitlines()) == 1  # the first point survived intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bench_cli_errors(capsys, tiny_dir, tmp_path):
    rc = main(["bench", "--target", str(tiny_dir("qwen3_moe")), "--batch-sizes", "1", "--gammas", "2",
               "-o", str(tmp_path / "x.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "a sweep needs a draft" in err
    rc = main(["bench", "--target", str(tiny_dir("qwen3_moe")), "--draft-method", "ngram", "--batch-sizes", "1",
               "--gammas", "2", "--workload", "gsm8k", "-o", str(tmp_path / "x.jsonl")])
    assert rc == 2 and "unknown workload 'gsm8k'" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
    (tmp_path / "bad.jsonl").write_text('{"speedup": 1.0}\n')
    rc = main(["report", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "rep")])
    assert rc == 2 and "not `moesd bench` output" in capsys.readouterr().err


def test_budget_sweep_records_experts_speed_and_quality_per_budget(tiny_dir, tmp_path):
    cfg = config(tiny_dir, tmp_path, batch_sizes=(3,), gammas=(3,), draft=str(tiny_dir("qwen3_moe")),
                 draft_method="model", alpha=None, routings=("model",), repeats=1, expert_budgets=(None, 2, 4, 8))
    out = tmp_path / "budget.jsonl"
    run_sweep(cfg, str(out), progress=io.StringIO())
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["expert_budget"] for r in recs] == [None, 2, 4, 8]
    ref, c2, _, c8 = recs
    assert ref["quality"]["token_match_rate"] == 1.0 and ref["quality"]["mean_kl_per_token"] is None
    assert c2["active_experts_verify"] <= 2 < ref["active_experts_verify"]
    assert c2["quality"]["mean_kl_per_token"] > 0 and c2["quality"]["token_match_rate"] < 1
    # C = E is the unbudgeted verifier: same tokens, zero KL.
    assert c8["quality"]["token_match_rate"] == 1.0 and c8["quality"]["mean_kl_per_token"] == pytest.approx(0, abs=1e-9)
    files = write_report([str(out)], str(tmp_path / "rep"))
    assert "budget_pareto.png" in files and "experts_vs_budget.png" in files
    assert "Expert budgets" in (tmp_path / "rep" / "report.md").read_text()


def test_budget_sweep_rejects_bad_budgets(tiny_dir, tmp_path):
    with pytest.raises(MoesdError):
        run_sweep(config(tiny_dir, tmp_path, expert_budgets=(None, 0)), str(tmp_path / "x.jsonl"), progress=io.StringIO())
    rc = main(["bench", "--target", str(tiny_dir("qwen3_moe")), "--draft-method", "ngram", "--batch-sizes", "1",
               "--gammas", "2", "--expert-budgets", "4,x", "-o", str(tmp_path / "y.jsonl")])
    assert rc == 2


def test_auto_gamma_series_beside_the_fixed_ones(tiny_dir, tmp_path, capsys):
    """`--gammas 2,3,auto`: one more point per batch size whose gamma the engine chose; the report shows it as
    its own series, fits leave it out (it is no measurement at one draft length)."""
    cfg = config(tiny_dir, tmp_path, batch_sizes=(1, 3), repeats=1, auto_gamma=True, max_new_tokens=12)
    assert [(p.gamma, p.adaptive) for p in points(cfg)][:3] == [(2, False), (3, False), (3, True)]
    out = tmp_path / "r.jsonl"
    run_sweep(cfg, str(out), progress=io.StringIO())
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    auto = [r for r in recs if r.get("gamma_policy") == "auto"]
    assert len(recs) == 6 and len(auto) == 2 and all("gamma_policy" not in r for r in recs if r not in auto)
    for r in auto:
        assert r["gamma"] == 3 and 0 <= r["mean_gamma"] <= 3 and sum(r["gamma_histogram"].values()) > 0
        assert r["speedup"] > 0 and r["active_experts_verify"] is None
    files = write_report([str(out)], str(tmp_path / "rep"))
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| auto |" in text and "what the engine chose" in text and files
    from moesd.perf.measurements import load_measurements

    assert len(load_measurements(out)) == 4  # the fixed-gamma points only
    rc = main(["bench", "--target", str(tiny_dir("qwen3_moe")), "--draft-method", "ngram", "--batch-sizes", "1",
               "--gammas", "2,auto", "--expert-budgets", "2", "-o", str(tmp_path / "b.jsonl"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not combine with --expert-budgets" in err
