"""`moesd import`: serving engines' benchmark results -> measurement JSONL for `moesd fit`."""

from __future__ import annotations

from moesd import render
from moesd.atomic_io import check_writable, write_text_atomic
from moesd.errors import MoesdError

HELP = "convert vLLM / SGLang benchmark results and /metrics snapshots into measurements `moesd fit` reads"
EXAMPLES = """examples:
  # vLLM: one `vllm bench serve --save-result` per concurrency, with SD and without (the baseline)
  moesd import sd_c1.json sd_c8.json sd_c32.json off_c1.json off_c8.json off_c32.json \\
      --target Qwen3-30B-A3B --hardware H100 -o points.jsonl
  # vLLM Prometheus counters around a `vllm bench latency` run at batch size 8, 128 output tokens
  moesd import latency.json --metrics before.txt after.txt --batch-size 8 --output-len 128 \\
      --baseline latency_off.json -o points.jsonl
  # SGLang: bench_serving results, gamma and acceptance from /server_info
  moesd import sglang_sd.jsonl --baseline sglang_off.jsonl --server-info server_info.json -o points.jsonl
then:  moesd fit points.jsonl --target Qwen3-30B-A3B --hardware H100 -o params.json"""


def add_arguments(p) -> None:
    p.add_argument("results", nargs="*", help="benchmark results: vLLM `bench serve --save-result` / `bench latency "
                                              "--output-json` JSON, SGLang `bench_serving` / `bench_one_batch` JSONL")
    p.add_argument("--baseline", action="append", default=[], metavar="FILE",
                   help="a result measured with SD off (files without acceptance data are baselines anyway)")
    p.add_argument("--metrics", nargs="+", metavar="SNAPSHOT",
                   help="vLLM /metrics text: BEFORE AFTER (or one snapshot: counters since server start); "
                        "acceptance for the one result that lacks it, or a run of its own with --batch-size")
    p.add_argument("--server-info", action="append", default=[], metavar="FILE",
                   help="SGLang /server_info JSON: draft length (speculative_num_steps) and avg_spec_accept_length")
    p.add_argument("--gamma", type=int, help="draft length, where the files do not say it")
    p.add_argument("--batch-size", type=int, help="batch size of results that do not record it")
    p.add_argument("--output-len", type=int, help="output tokens per request of a `vllm bench latency` run")
    p.add_argument("--target", help="the served model (preset, config.json, or Hugging Face id in the local cache): "
                                    "adds E and K, which `moesd fit` needs")
    p.add_argument("--hardware", help="recorded on every line for `moesd fit` (preset name or JSON)")
    p.add_argument("--tp", type=int, help="tensor-parallel degree, recorded on every line")
    p.add_argument("-o", "--output", help="write the measurement JSONL here (default: standard output)")


def run(a) -> str:
    from moesd.bench import serving_import as si
    from moesd.perf.hardware import resolve_hardware
    from moesd.perf.inputs import resolve_model

    if a.output:
        check_writable(a.output)
    for flag, value in (("--gamma", a.gamma), ("--batch-size", a.batch_size), ("--output-len", a.output_len),
                        ("--tp", a.tp)):
        if value is not None and value < 1:
            raise MoesdError(f"{flag} must be >= 1, got {value}")
    if not a.results and not a.metrics and not a.baseline:
        raise MoesdError("nothing to import: give result files and/or --metrics snapshots")
    arch = resolve_model(a.target) if a.target else None
    if a.hardware:
        resolve_hardware(a.hardware)  # an unknown name fails here, not later in `moesd fit`
    runs, infos = [], []
    for path in a.results:
        r, i = si.read_runs(path, a.batch_size, a.output_len)
        runs += r
        infos += i
    for path in a.baseline:
        r, i = si.read_runs(path, a.batch_size, a.output_len, baseline=True)
        runs += r
        infos += i
    for path in a.server_info:
        r, i = si.read_runs(path)
        if r or not i:
            raise MoesdError(f"{path}: not an SGLang /server_info response")
        infos += i
    if a.metrics:
        window = si.metrics_window(a.metrics)
        lacking = [k for k, r in enumerate(runs) if not r.speculative and not r.forced_baseline
                   and r.format == "vllm-latency"]
        if len(lacking) > 1:
            raise MoesdError(f"--metrics gives one window but {len(lacking)} results lack acceptance: import them "
                             f"one at a time, each with its own snapshots")
        if lacking:
            runs[lacking[0]] = si.with_metrics(runs[lacking[0]], window)
        else:
            runs.append(si.run_from_metrics(window, a.batch_size))
    points, notes = si.to_points(runs, infos, a.gamma)
    if arch is None:
        served = {p.get("served_model") for p in points} - {None}
        if len(served) == 1:
            try:
                arch = resolve_model(served.pop())
            except MoesdError:
                notes.append("the served model is not a preset or in the local Hugging Face cache: pass --target "
                             "so the lines carry E and K")
    for p in points:
        if arch is not None:
            p.update(target=a.target or arch.name, num_experts=arch.num_experts,
                     experts_per_token=arch.experts_per_token)
        if a.hardware:
            p["hardware"] = a.hardware
        if a.tp:
            p["tp"] = a.tp
    text = "".join(render.to_json(p, indent=None) for p in points)
    if not a.output:
        import sys

        for n in notes:  # standard output carries the JSONL only
            print(f"moesd: note: {n}", file=sys.stderr)
        return text
    write_text_atomic(a.output, text)
    out = render.import_text(points) + "".join(f"note: {n}\n" for n in notes)
    return out + f"wrote {len(points)} measurement(s) to {a.output}\n"
