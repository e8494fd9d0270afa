from __future__ import annotations

from moesd import render
from moesd.atomic_io import write_text_atomic
from moesd.bench.calibrate import calibrate_cpu
from moesd.errors import MoesdError


def run(output: str | None, repeats: int, threads: int | None, use_numpy: bool) -> str:
    if repeats < 1:
        raise MoesdError(f"--repeats must be >= 1, got {repeats}")
    hw = calibrate_cpu(repeats, threads, use_torch=False if use_numpy else None)
    data = hw.to_dict()
    text = render.to_json(data)
    summary = (f"bandwidth {hw.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s, peak {hw.peak_bf16_flops_per_s / 1e9:.0f} "
               f"GFLOP/s, ridge point {hw.ridge_point_flops_per_byte:.1f} FLOP/byte\n{hw.source}\n")
    if output:
        write_text_atomic(output, text)
        return summary + f"wrote {output}: use it as --hardware {output}\n"
    return text
