from __future__ import annotations

import math

from moesd import render
from moesd.commands.flags import MAX_LIST, acceptance_and_gammas, scenario_args, scenario_kw
from moesd.atomic_io import check_writable, write_text_atomic
from moesd.errors import MoesdError
from moesd.perf.inputs import build_scenario
from moesd.perf.schedule import best_gamma_schedule, trtllm_config, vllm_config


HELP = "best gamma per batch size as vLLM's dynamic SD table"
EXAMPLES = 'examples:\n  moesd schedule --target Qwen3-30B-A3B --hardware H100-SXM --draft-kind eagle --alpha 0.7 --max-batch-size 256\n  moesd schedule ... --format table -o schedule.txt'


def add_arguments(p) -> None:
    scenario_args(p)
    p.add_argument("--max-batch-size", type=int, default=256, help="schedule batch sizes 1..N")
    p.add_argument("--format", choices=["vllm", "trtllm", "table"], default="vllm",
                   help="vllm: num_speculative_tokens_per_batch_size rows [start, end, K]; trtllm: TensorRT-LLM's "
                        "max_draft_len + draft_len_schedule; table: text")
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
    return _run(scenario_kw(a), a.max_batch_size, gammas, acceptance, a.format, a.output, a.max_distinct, a.min_gain)


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
         max_distinct: int | None = None, min_gain: float = 0.0) -> str:
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
    if fmt == "trtllm":
        table = _trtllm_table(table, scenario, max_batch_size, gammas, acceptance, max_distinct, min_gain)
        text = render.to_json(trtllm_config(table))
    else:
        text = render.vllm_schedule_json(vllm_config(table)) if fmt == "vllm" else render.schedule_text(table)
    if output:
        write_text_atomic(output, text)
        return f"wrote {output}\n"
    return text
