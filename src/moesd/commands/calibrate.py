from __future__ import annotations

from moesd import render
from moesd.atomic_io import check_writable, write_text_atomic
from moesd.errors import MoesdError
from moesd.progress import quiet_flag


HELP = "measure this machine's bandwidth and GEMM peak into a hardware JSON"
EXAMPLES = 'examples:\n  moesd calibrate -o cpu.json && moesd predict --target OLMoE-1B-7B --hardware cpu.json --alpha 0.7'


def add_arguments(p) -> None:
    p.add_argument("-o", "--output", help="hardware JSON to write (use it as --hardware FILE)")
    p.add_argument("--repeats", type=int, default=9, help="timed repeats per measurement (median taken)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--numpy", action="store_true", help="measure with numpy fp32 even if torch is installed")
    quiet_flag(p)


def run(a) -> str:
    if a.output:
        check_writable(a.output)
    return _run(a.output, a.repeats, a.threads, a.numpy, a.quiet)


def _run(output: str | None, repeats: int, threads: int | None, use_numpy: bool, quiet: bool = False) -> str:
    if repeats < 1:
        raise MoesdError(f"--repeats must be >= 1, got {repeats}")
    from moesd.bench.calibrate import calibrate_cpu

    hw = calibrate_cpu(repeats, threads, use_torch=False if use_numpy else None, quiet=quiet)
    data = hw.to_dict()
    text = render.to_json(data)
    summary = (f"bandwidth {hw.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s, peak {hw.peak_bf16_flops_per_s / 1e9:.0f} "
               f"GFLOP/s, ridge point {hw.ridge_point_flops_per_byte:.1f} FLOP/byte\n{hw.source}\n")
    if output:
        write_text_atomic(output, text)
        return summary + f"wrote {output}: use it as --hardware {output}\n"
    return text
