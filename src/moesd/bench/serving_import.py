"""Serving engines' benchmark outputs -> measurement lines that `moesd fit` reads.

Formats, from the engines' own sources (read 2026-11-27):

- vLLM `vllm bench serve --save-result` (vllm/benchmarks/serve.py): one JSON object per run (or one per line with
  `--append-result`) with `max_concurrency`, `mean_tpot_ms`, `median_itl_ms`, `output_throughput`, `model_id`
  and, when the server speculates, `spec_decode_acceptance_length` (1 + accepted / drafts: the bonus token
  counted), `spec_decode_acceptance_rate` (a percentage), `spec_decode_num_drafts`, `spec_decode_draft_tokens`,
  `spec_decode_accepted_tokens`, `spec_decode_per_position_acceptance_rates` (one per draft position).
- vLLM `vllm bench latency --output-json` (vllm/benchmarks/latency.py): `avg_latency`, `latencies`,
  `percentiles`; batch size and output length are flags of the run, not in the file (give --batch-size and
  --output-len), and it carries no acceptance (give --metrics snapshots of the same run).
- vLLM Prometheus `/metrics` snapshots (bench/prometheus.py).
- SGLang `python -m sglang.bench_serving` (python/sglang/bench_serving.py): JSON lines with `backend`,
  `max_concurrency`, `mean_tpot_ms`, `median_itl_ms`, `output_throughput` and `accept_length` (the server's
  average speculative acceptance length, bonus token counted; absent or null without SD).
- SGLang `python -m sglang.bench_one_batch --result-filename` (python/sglang/bench_one_batch.py): JSON lines with
  `batch_size`, `input_len`, `output_len`, `median_decode_latency` (s per decode step), `prefill_latency`.
  It runs the model without speculation: a baseline.
- SGLang `/server_info` (`/get_server_info` before v0.4.7): server args (`speculative_algorithm`,
  `speculative_num_steps`, `speculative_eagle_topk`, `speculative_num_draft_tokens`) and `internal_states`
  with `avg_spec_accept_length`.

A run that speculated becomes one line: batch size (the benchmark's concurrency), gamma, acceptance as mean
acceptance length, sigma = length / (gamma + 1), vLLM's acceptance rate and alpha (i.i.d. inversion), per-token
latency and throughput; paired with an SD-off run at the same batch size it gains `speedup` = baseline TPOT / SD
TPOT (the paper's throughput ratio at fixed concurrency) and `target_decode_s` (the baseline's median inter-token
latency: one decode step of the whole batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from moesd.errors import MoesdError
from moesd.jsonl import loads, read_text
from moesd.bench.prometheus import ITL_HISTOGRAMS, TPOT_HISTOGRAMS, Snapshot
from moesd.perf.acceptance import acceptance_rate_from_alpha, alpha_from_mean_acceptance_length

FORMATS = ("vllm-serve", "vllm-latency", "sglang-serve", "sglang-one-batch", "sglang-server-info", "prometheus")


@dataclass
class ServingRun:
    """One benchmark run, whatever engine wrote it; None where the format does not say."""

    source: str
    format: str
    engine: str
    batch_size: int | None = None
    tpot_s: float | None = None  # mean time per output token of a request, first token excluded
    itl_s: float | None = None  # median time between streamed chunks: one engine step
    output_throughput_tok_s: float | None = None
    gamma: int | None = None
    mean_acceptance_length: float | None = None
    acceptance_rate: float | None = None
    per_position_acceptance: list[float] = field(default_factory=list)
    model: str | None = None
    forced_baseline: bool = False

    @property
    def speculative(self) -> bool:
        return self.mean_acceptance_length is not None


def _num(rec: dict, key: str, where: str, required: bool = True, positive: bool = True) -> float | None:
    value = rec.get(key)
    if value is None:
        if required:
            raise MoesdError(f"{where}: missing '{key}'")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and value <= 0) or value < 0:
        raise MoesdError(f"{where}: '{key}' must be a {'positive' if positive else 'non-negative'} finite number, "
                         f"got {value!r}")
    return float(value)


def _int(rec: dict, key: str, where: str, required: bool = True) -> int | None:
    value = _num(rec, key, where, required)
    if value is None:
        return None
    if value != int(value):
        raise MoesdError(f"{where}: '{key}' must be an integer, got {value!r}")
    return int(value)


def _objects(path: str, text: str) -> list[tuple[str, dict]]:
    """A JSON object, or one object per line (vLLM --append-result, SGLang's appended results)."""
    try:
        whole = loads(text)
        if isinstance(whole, dict):
            return [(path, whole)]
        if isinstance(whole, list) and whole and all(isinstance(x, dict) for x in whole):
            return [(f"{path}[{i}]", x) for i, x in enumerate(whole)]
        raise MoesdError(f"{path}: expected a JSON object or JSON lines of objects")
    except ValueError:
        pass
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except ValueError as exc:
            raise MoesdError(f"{path}:{i}: malformed JSON ({exc})") from None
        if not isinstance(rec, dict):
            raise MoesdError(f"{path}:{i}: not a JSON object")
        out.append((f"{path}:{i}", rec))
    if not out:
        raise MoesdError(f"{path}: empty file")
    return out


def detect(rec: dict) -> str | None:
    if "spec_decode_acceptance_length" in rec or ("mean_tpot_ms" in rec and "model_id" in rec):
        return "vllm-serve"
    if "avg_latency" in rec and "latencies" in rec:
        return "vllm-latency"
    if "median_decode_latency" in rec and "batch_size" in rec:
        return "sglang-one-batch"
    if "internal_states" in rec or "avg_spec_accept_length" in rec or "speculative_algorithm" in rec:
        return "sglang-server-info"
    if "mean_tpot_ms" in rec and ("accept_length" in rec or "concurrency" in rec):
        return "sglang-serve"
    return None


def _concurrency(rec: dict, where: str, batch_size: int | None) -> int:
    value = rec.get("max_concurrency")
    if value is None:
        if batch_size is None:
            raise MoesdError(f"{where}: the run has no max_concurrency (it was paced by request rate), so its "
                             f"batch size is unknown: rerun with --max-concurrency, or pass --batch-size")
        return batch_size
    b = _int(rec, "max_concurrency", where)
    if batch_size is not None and batch_size != b:
        raise MoesdError(f"{where}: --batch-size {batch_size} contradicts the file's max_concurrency {b}")
    return b


def _vllm_serve(where: str, rec: dict, batch_size: int | None) -> ServingRun:
    run = ServingRun(where, "vllm-serve", "vllm", _concurrency(rec, where, batch_size),
                     tpot_s=_num(rec, "mean_tpot_ms", where) / 1e3,
                     itl_s=(_num(rec, "median_itl_ms", where, required=False) or 0) / 1e3 or None,
                     output_throughput_tok_s=_num(rec, "output_throughput", where, required=False),
                     model=rec.get("model_id") if isinstance(rec.get("model_id"), str) else None)
    if rec.get("spec_decode_acceptance_length") is None:
        return run
    length = _num(rec, "spec_decode_acceptance_length", where)
    rate = _num(rec, "spec_decode_acceptance_rate", where, required=False, positive=False)
    per_pos = rec.get("spec_decode_per_position_acceptance_rates") or []
    if not isinstance(per_pos, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                and math.isfinite(x) and 0 <= x <= 1 for x in per_pos):
        raise MoesdError(f"{where}: 'spec_decode_per_position_acceptance_rates' must be a list of rates in [0, 1]")
    gamma = len(per_pos) or None
    drafts = _num(rec, "spec_decode_num_drafts", where, required=False)
    tokens = _num(rec, "spec_decode_draft_tokens", where, required=False)
    if gamma is None and drafts and tokens:
        if abs(tokens / drafts - round(tokens / drafts)) > 1e-6:
            raise MoesdError(f"{where}: {tokens:g} draft tokens over {drafts:g} drafts is not a whole draft "
                             f"length (a dynamic schedule?): pass --gamma")
        gamma = round(tokens / drafts)
    return replace(run, gamma=gamma, mean_acceptance_length=length,
                   acceptance_rate=None if rate is None else rate / 100.0, per_position_acceptance=list(per_pos))


def _sglang_serve(where: str, rec: dict, batch_size: int | None) -> ServingRun:
    length = rec.get("accept_length")
    return ServingRun(where, "sglang-serve", "sglang", _concurrency(rec, where, batch_size),
                      tpot_s=_num(rec, "mean_tpot_ms", where) / 1e3,
                      itl_s=(_num(rec, "median_itl_ms", where, required=False) or 0) / 1e3 or None,
                      output_throughput_tok_s=_num(rec, "output_throughput", where, required=False),
                      mean_acceptance_length=None if length is None else _num(rec, "accept_length", where))


def _sglang_one_batch(where: str, rec: dict) -> ServingRun:
    step = _num(rec, "median_decode_latency", where)
    b = _int(rec, "batch_size", where)
    return ServingRun(where, "sglang-one-batch", "sglang", b, tpot_s=step, itl_s=step,
                      output_throughput_tok_s=b / step, forced_baseline=True)


def _vllm_latency(where: str, rec: dict, batch_size: int | None, output_len: int | None) -> ServingRun:
    if batch_size is None or output_len is None:
        raise MoesdError(f"{where}: a `vllm bench latency` result does not record its batch size or output length: "
                         f"pass --batch-size and --output-len as the run used them")
    latency = _num(rec, "avg_latency", where)
    # The whole batch's end-to-end time over its output tokens: prefill included, so an upper bound on TPOT.
    return ServingRun(where, "vllm-latency", "vllm", batch_size, tpot_s=latency / output_len,
                      output_throughput_tok_s=batch_size * output_len / latency)


@dataclass
class ServerInfo:
    source: str
    gamma: int | None
    mean_acceptance_length: float | None


def _server_info(where: str, rec: dict) -> ServerInfo:
    args = rec.get("server_args") if isinstance(rec.get("server_args"), dict) else rec
    topk = args.get("speculative_eagle_topk")
    if isinstance(topk, int) and topk > 1:
        raise MoesdError(f"{where}: speculative_eagle_topk {topk} drafts a tree, which has no single draft length; "
                         f"MoESD's model covers chain drafts (topk 1)")
    gamma = args.get("speculative_num_steps")
    if gamma is not None:
        gamma = _int(args, "speculative_num_steps", where)
    states = rec.get("internal_states")
    length = None
    if isinstance(states, list) and states and isinstance(states[0], dict):
        values = [s.get("avg_spec_accept_length") for s in states if s.get("avg_spec_accept_length") is not None]
        if values:
            length = sum(_num({"v": v}, "v", f"{where} avg_spec_accept_length") for v in values) / len(values)
    elif rec.get("avg_spec_accept_length") is not None:
        length = _num(rec, "avg_spec_accept_length", where)
    return ServerInfo(where, gamma, length)


def read_runs(path: str, batch_size: int | None = None, output_len: int | None = None,
              baseline: bool = False) -> tuple[list[ServingRun], list[ServerInfo]]:
    text = read_text(path, "benchmark result")
    if not text.lstrip().startswith(("{", "[")):
        raise MoesdError(f"{path}: not a JSON benchmark result (a Prometheus snapshot goes to --metrics)")
    runs, infos = [], []
    for where, rec in _objects(path, text):
        kind = detect(rec)
        if kind == "vllm-serve":
            run = _vllm_serve(where, rec, batch_size)
        elif kind == "sglang-serve":
            run = _sglang_serve(where, rec, batch_size)
        elif kind == "sglang-one-batch":
            run = _sglang_one_batch(where, rec)
        elif kind == "vllm-latency":
            run = _vllm_latency(where, rec, batch_size, output_len)
        elif kind == "sglang-server-info":
            infos.append(_server_info(where, rec))
            continue
        else:
            raise MoesdError(f"{where}: not a result moesd can import (known: {', '.join(FORMATS)}); it has keys "
                             f"{', '.join(sorted(rec)[:8])}")
        if baseline:
            if run.speculative:
                raise MoesdError(f"{where}: given as a baseline but it speculated (acceptance length "
                                 f"{run.mean_acceptance_length:g})")
            run = replace(run, forced_baseline=True)
        runs.append(run)
    return runs, infos


def metrics_window(paths: list[str]) -> Snapshot:
    if not 1 <= len(paths) <= 2:
        raise MoesdError("--metrics takes one snapshot (counters since server start) or two (BEFORE AFTER)")
    snaps = [Snapshot.read(p) for p in paths]
    return snaps[-1].window(snaps[0] if len(snaps) == 2 else None)


def run_from_metrics(window: Snapshot, batch_size: int | None) -> ServingRun:
    """A metrics window as a run of its own: acceptance from the SD counters, TPOT from the histograms."""
    if batch_size is None:
        raise MoesdError(f"{window.source}: a metrics window does not know the batch size: pass --batch-size")
    run = ServingRun(window.source, "prometheus", "vllm", batch_size,
                     tpot_s=window.mean_seconds(TPOT_HISTOGRAMS), itl_s=window.mean_seconds(ITL_HISTOGRAMS))
    return with_metrics(run, window)


def with_metrics(run: ServingRun, window: Snapshot) -> ServingRun:
    spec = window.spec
    if not spec.found:
        raise MoesdError(f"{window.source}: no vllm:spec_decode_* counters: the server did not speculate")
    if spec.num_drafts <= 0:
        raise MoesdError(f"{window.source}: no drafts in the window (the snapshots bracket no SD traffic)")
    gamma = len(spec.accepted_per_position) or None
    ratio = spec.num_draft_tokens / spec.num_drafts
    if gamma is None and abs(ratio - round(ratio)) < 1e-6:
        gamma = round(ratio)
    per_pos = [spec.accepted_per_position[p] / spec.num_drafts for p in sorted(spec.accepted_per_position)]
    return replace(run, gamma=run.gamma or gamma, mean_acceptance_length=1 + spec.num_accepted_tokens / spec.num_drafts,
                   acceptance_rate=spec.num_accepted_tokens / spec.num_draft_tokens if spec.num_draft_tokens else None,
                   per_position_acceptance=per_pos)


def _finish_gamma(run: ServingRun, gamma: int | None, infos: list[ServerInfo]) -> ServingRun:
    known = [(run.source, run.gamma)] if run.gamma is not None else []
    if run.engine == "sglang":
        known += [(i.source, i.gamma) for i in infos if i.gamma is not None]
    if gamma is not None:
        known.append(("--gamma", gamma))
    values = {g for _, g in known}
    if len(values) > 1:
        raise MoesdError(f"{run.source}: conflicting draft lengths: "
                         + ", ".join(f"{g} ({src})" for src, g in known))
    if not values:
        raise MoesdError(f"{run.source}: the draft length is not in the file: pass --gamma (vLLM's "
                         f"num_speculative_tokens, SGLang's speculative_num_steps)")
    g = values.pop()
    if not 1 <= g <= 64:
        raise MoesdError(f"{run.source}: draft length must lie in 1..64, got {g}")
    length = run.mean_acceptance_length
    if not 1.0 <= length <= g + 1 + 1e-9:
        raise MoesdError(f"{run.source}: mean acceptance length {length:g} outside [1, gamma + 1 = {g + 1}]: "
                         f"the draft length is wrong, or the length excludes the bonus token")
    return replace(run, gamma=g)


def to_points(runs: list[ServingRun], infos: list[ServerInfo], gamma: int | None = None) -> tuple[list[dict], list[str]]:
    """Measurement lines for every run that speculated, paired with the SD-off run at its batch size;
    notes on what could not be paired."""
    notes = []
    sd, base = [], {}
    sglang_length = [i.mean_acceptance_length for i in infos if i.mean_acceptance_length is not None]
    for run in runs:
        if run.engine == "sglang" and not run.speculative and not run.forced_baseline and sglang_length:
            run = replace(run, mean_acceptance_length=sum(sglang_length) / len(sglang_length))
        if run.speculative:
            sd.append(_finish_gamma(run, gamma, infos))
        else:
            if run.batch_size in base:
                raise MoesdError(f"{run.source}: a second SD-off run at batch size {run.batch_size} "
                                 f"(also {base[run.batch_size].source}): which one is the baseline?")
            base[run.batch_size] = run
    if not sd:
        raise MoesdError("no run that speculated among the inputs (vLLM: spec_decode_* keys; SGLang: "
                         "accept_length or --server-info; Prometheus: --metrics)")
    seen: dict[tuple, str] = {}
    points = []
    for run in sorted(sd, key=lambda r: (r.batch_size, r.gamma)):
        key = (run.batch_size, run.gamma)
        if key in seen:
            raise MoesdError(f"{run.source}: a second SD run at batch size {run.batch_size}, gamma {run.gamma} "
                             f"(also {seen[key]})")
        seen[key] = run.source
        g, length = run.gamma, run.mean_acceptance_length
        point = {"batch_size": run.batch_size, "gamma": g, "sigma": length / (g + 1),
                 "mean_acceptance_length": length}
        if length < g + 1:
            alpha = alpha_from_mean_acceptance_length(length, g)
            point["alpha"] = alpha
            point["acceptance_rate"] = (run.acceptance_rate if run.acceptance_rate is not None
                                        else float(acceptance_rate_from_alpha(alpha, g)))
        if run.per_position_acceptance:
            point["per_position_acceptance"] = run.per_position_acceptance
        if run.tpot_s is not None:
            point["sd_tpot_s"] = run.tpot_s
        if run.itl_s is not None:
            point["sd_round_s"] = run.itl_s
        if run.output_throughput_tok_s is not None:
            point["output_throughput_tok_s"] = run.output_throughput_tok_s
        b = base.get(run.batch_size)
        if b is not None and b.tpot_s and run.tpot_s:
            point["speedup"] = b.tpot_s / run.tpot_s
            point["baseline_tpot_s"] = b.tpot_s
            if b.itl_s is not None:
                point["target_decode_s"] = b.itl_s
            point["baseline_source"] = b.source
        else:
            notes.append(f"{run.source}: no SD-off run at batch size {run.batch_size}: no speedup "
                         f"(`moesd fit` needs one; import the baseline run too)")
        point.update(engine=run.engine, format=run.format, source=run.source)
        if run.model:
            point["served_model"] = run.model
        points.append(point)
    unused = sorted(set(base) - {p["batch_size"] for p in points})
    if unused:
        notes.append(f"SD-off runs at batch sizes {unused} have no SD run to pair with")
    return points, notes
