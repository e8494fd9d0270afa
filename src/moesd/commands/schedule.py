from __future__ import annotations

import math

from moesd import render
from moesd.commands.flags import MAX_LIST, acceptance_and_gammas, scenario_args, scenario_kw
from moesd.atomic_io import check_writable, write_text_atomic
from moesd.errors import MoesdError
from moesd.perf.inputs import build_scenario
from moesd.perf.schedule import (SGLANG_ALGORITHMS, VLLM_FORMS, VLLM_METHODS, best_gamma_schedule, sglang_adaptive,
                                 trtllm_config, vllm_config, vllm_dynamic_config, vllm_speculative_config)

FORMATS = ("vllm", "vllm-ranges", "vllm-dynamic", "vllm-table", "trtllm", "sglang", "table")

HELP = "best gamma per batch size, as the config a serving engine takes (vLLM, TensorRT-LLM, SGLang)"
EXAMPLES = """examples:
  moesd schedule --target Qwen3-30B-A3B --hardware H100 --draft-kind eagle --spec-model yuhuili/EAGLE3-Qwen3-30B-A3B \\
      --alpha 0.7 --max-batch-size 256 -o speculative_config.json
  vllm serve Qwen/Qwen3-30B-A3B --speculative-config "$(cat speculative_config.json)"
  moesd schedule ... --params params.json --format vllm-dynamic      # batch_stats from predicted step times
  moesd schedule ... --format trtllm | sglang | table
formats:
""" + "\n".join(f"  {k}: {v}" for k, v in VLLM_FORMS.items()) + """
  trtllm: TensorRT-LLM max_draft_len + draft_len_schedule (batch-size lower bounds, {1: max_draft_len} required)
  sglang: server flags + --speculative-adaptive-config tiers (batch-size lower bounds -> candidate_steps)
  table: text"""


def add_arguments(p) -> None:
    scenario_args(p)
    p.add_argument("--max-batch-size", type=int, default=256, help="schedule batch sizes 1..N")
    p.add_argument("--format", choices=FORMATS, default="vllm", help="output form (see below)")
    p.add_argument("--spec-method", help="the engine's method name (default from --draft-kind: vLLM draft_model / "
                                         "eagle / mtp / ngram; SGLang STANDALONE / EAGLE / NGRAM), e.g. eagle3")
    p.add_argument("--spec-model", help="the draft / EAGLE head the server loads (Hugging Face id or path); default "
                                        "for a draft model: --draft")
    p.add_argument("-o", "--output", help="write the schedule to this file instead of stdout")
    p.add_argument("--max-distinct", type=int,
                   help="use at most N distinct draft lengths (0, no SD, counts as one): engines compile per length")
    p.add_argument("--min-gain", type=float, default=0.0,
                   help="with --max-distinct: the fraction of its best predicted speedup a batch size may lose, "
                        "e.g. 0.03")


def run(a) -> str:
    if a.output:
        check_writable(a.output)
    acceptance, gammas = acceptance_and_gammas(a)
    kind = a.draft_kind or ("model" if a.draft else "ngram")
    if a.format in ("vllm", "vllm-ranges", "sglang") and kind in ("model", "eagle") and not (a.spec_model or a.draft):
        raise MoesdError(f"--format {a.format} writes the draft the server loads: pass --spec-model (the "
                         f"{'EAGLE head' if kind == 'eagle' else 'draft model'}'s Hugging Face id or path)")
    from moesd.perf.model_presets import MODEL_PRESETS

    draft_id = MODEL_PRESETS[a.draft].hf_id if a.draft in MODEL_PRESETS else a.draft  # a preset -> its HF repo
    spec = {"kind": kind, "method": a.spec_method, "model": a.spec_model or draft_id}
    return _run(scenario_kw(a), a.max_batch_size, gammas, acceptance, a.format, a.output, a.max_distinct, a.min_gain,
                spec)


def _trtllm_table(table, scenario, max_batch_size, gammas, acceptance, max_distinct, min_gain):
    """TensorRT-LLM requires the schedule's entry at batch size 1 to be max_draft_len, so no entry may draft
    more than batch size 1 does. Among the caps M (batch size 1 drafts M, the rest their best gamma <= M), take
    the one with the largest summed predicted speedup over the batch sizes."""
    import numpy as np

    from moesd.perf.prediction import predict

    if table[0][2] == 0 and max(k for _, _, k in table) == 0:
        raise MoesdError("SD loses at every batch size here: do not enable it")
    batch = np.arange(1, table[-1][1] + 1)
    grid = predict(scenario, batch, gammas, acceptance)
    speed = {int(g): grid["speedup"][i] for i, g in enumerate(grid["gamma"][:, 0])}
    best = None
    for cap in sorted({g for g in gammas if g >= 1}):
        rows = best_gamma_schedule(scenario, max_batch_size, [g for g in gammas if g <= cap], acceptance,
                                   max_distinct, min_gain)
        head = [[1, 1, cap]] + ([[2, rows[0][1], rows[0][2]]] if rows[0][1] > 1 else [])
        rows = _merge(head + rows[1:])
        total = sum(speed[k][b - 1] if k else 1.0 for start, end, k in rows for b in range(start, end + 1))
        if best is None or total > best[0]:
            best = (total, rows)
    return best[1]


def _merge(rows: list[list[int]]) -> list[list[int]]:
    """Rows [start, end, K] with batch size 1 split off first; adjacent rows with the same K merged."""
    out: list[list[int]] = []
    for start, end, k in rows:
        if out and out[-1][2] == k and out[-1][1] + 1 >= start:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end, k])
    return out


def _run(scenario_kw: dict, max_batch_size: int, gammas: list[int], acceptance, fmt: str, output: str | None,
         max_distinct: int | None = None, min_gain: float = 0.0, spec: dict | None = None) -> str:
    if max_distinct is not None and max_distinct < 1:
        raise MoesdError(f"--max-distinct must be >= 1, got {max_distinct}")
    if not (math.isfinite(min_gain) and 0 <= min_gain < 1):
        raise MoesdError(f"--min-gain must lie in [0, 1), got {min_gain}")
    if not acceptance.varies_with_gamma:
        raise MoesdError("schedule needs --alpha: with a fixed --sigma a longer draft never costs acceptance, "
                         "so the choice of gamma would be meaningless")
    if not 1 <= max_batch_size <= MAX_LIST:
        raise MoesdError(f"--max-batch-size must lie in 1..{MAX_LIST}, got {max_batch_size}")
    scenario, _ = build_scenario(**scenario_kw)
    table = best_gamma_schedule(scenario, max_batch_size, gammas, acceptance, max_distinct, min_gain)
    spec = spec or {"kind": "ngram", "method": None, "model": None}
    if fmt == "trtllm":
        table = _trtllm_table(table, scenario, max_batch_size, gammas, acceptance, max_distinct, min_gain)
        text = render.to_json(trtllm_config(table))
    elif fmt in ("vllm", "vllm-ranges"):
        method = spec["method"] or VLLM_METHODS[spec["kind"]]
        model = spec["model"] if spec["kind"] in ("model", "eagle") else None
        text = render.config_json(vllm_speculative_config(table, method, model, fmt))
    elif fmt == "vllm-dynamic":
        allowed = sorted({k for _, _, k in table} - {0}) or [1]
        text = render.config_json(vllm_dynamic_config(scenario, acceptance, list(range(1, max(allowed) + 1)),
                                                      max_batch_size))
    elif fmt == "sglang":
        algorithm = spec["method"] or SGLANG_ALGORITHMS[spec["kind"]]
        model = spec["model"] if spec["kind"] in ("model", "eagle") else None
        text = render.config_json(sglang_adaptive(table, algorithm, model))
    elif fmt == "vllm-table":
        text = render.vllm_schedule_json(vllm_config(table))
    else:
        text = render.schedule_text(table)
    if output:
        write_text_atomic(output, text)
        return f"wrote {output}\n"
    return text
