"""Calibrate the `cpu` hardware entry: measure streaming bandwidth and GEMM peak on this machine.

With torch installed we measure what the engine runs, bf16 (docs/notes/offline.md section 5: fp32 small-M
GEMMs are erratic on our CPUs): a batch-1 bf16 GEMV over a weight far larger than the L3 cache for
bandwidth, and a 2048^3 bf16 GEMM for peak. Without torch we fall back to numpy fp32 and say so
in the preset's source, since bf16 peak is typically several times higher.
"""

from __future__ import annotations

import datetime
import os

import numpy as np

from moesd.bench.timing import median_seconds
from moesd.perf.hardware import Hardware

_WEIGHT_BYTES = 512 * 2**20  # far beyond any L3, so every GEMV streams from DRAM
_GEMM_N = 2048


def _measure_torch(repeats: int, threads: int | None) -> tuple[float, float, str]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    cols = 8192
    rows = _WEIGHT_BYTES // (2 * cols)
    w = torch.randn(rows, cols, dtype=torch.bfloat16)
    x = torch.randn(1, cols, dtype=torch.bfloat16)
    gemv_s = median_seconds(lambda: torch.nn.functional.linear(x, w), repeats)
    a = torch.randn(_GEMM_N, _GEMM_N, dtype=torch.bfloat16)
    b = torch.randn(_GEMM_N, _GEMM_N, dtype=torch.bfloat16)
    gemm_s = median_seconds(lambda: a @ b, repeats)
    return w.numel() * 2 / gemv_s, 2 * _GEMM_N**3 / gemm_s, f"torch {torch.__version__} bf16, {torch.get_num_threads()} threads"


def _measure_numpy(repeats: int) -> tuple[float, float, str]:
    arr = np.ones(_WEIGHT_BYTES // 4, dtype=np.float32)
    read_s = median_seconds(lambda: arr.sum(), repeats)
    a = np.random.default_rng(0).standard_normal((_GEMM_N, _GEMM_N)).astype(np.float32)
    gemm_s = median_seconds(lambda: a @ a, repeats)
    return arr.nbytes / read_s, 2 * _GEMM_N**3 / gemm_s, f"numpy {np.__version__} fp32 (torch not installed)"


def calibrate_cpu(repeats: int = 9, threads: int | None = None, use_torch: bool | None = None,
                  quiet: bool = False) -> Hardware:
    if use_torch is None:
        try:
            import torch  # noqa: F401

            use_torch = True
        except ImportError:
            use_torch = False
    from moesd.progress import progress

    with progress(total=1, desc="calibrate (bandwidth, GEMM)", unit="run", quiet=quiet) as meter:
        if use_torch:
            bandwidth, flops, how = _measure_torch(repeats, threads)
        else:
            bandwidth, flops, how = _measure_numpy(repeats)
        meter.update(1)
    memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    today = datetime.date.today().isoformat()
    return Hardware(
        name="cpu-calibrated",
        memory_bandwidth_bytes_per_s=bandwidth,
        peak_bf16_flops_per_s=flops,
        memory_bytes=memory,
        source=f"moesd calibrate on {today}: median of {repeats} runs, {how}, {os.cpu_count()} CPUs",
    )
