from __future__ import annotations

import math

from moesd import render
from moesd.commands.flags import MAX_LIST, acceptance_and_gammas, scenario_args, scenario_kw
from moesd.atomic_io import check_writable, write_text_atomic
from moesd.errors import MoesdError
from moesd.perf.inputs import build_scenario
from moesd.perf.schedule import best_gamma_schedule, vllm_config


HELP = "best gamma per batch size as vLLM's dynamic SD table"
EXAMPLES = 'examples:\n  moesd schedule --target Qwen3-30B-A3B --hardware H100-SXM --draft-kind eagle --alpha 0.7 --max-batch-size 256\n  moesd schedule ... --format table -o schedule.txt'


def add_arguments(p) -> None:
    scenario_args(p)
    p.add_argument("--max-batch-size", type=int, default=256, help="schedule batch sizes 1..N")
    p.add_argument("--format", choices=["vllm", "table"], default="vllm", help="output format")
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
    text = render.vllm_schedule_json(vllm_config(table)) if fmt == "vllm" else render.schedule_text(table)
    if output:
        write_text_atomic(output, text)
        return f"wrote {output}\n"
    return text
