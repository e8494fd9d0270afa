"""Benchmark timing: one warm-up, then the median of repeats (this CPU's timings vary 10-25 %)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def sample_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    return statistics.median(sample_seconds(fn, repeats, warmup))
