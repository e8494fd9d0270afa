"""How the `--gamma auto` benchmarks (adaptive_gamma.py, adaptive_gamma_confirm.py, adaptive_gamma_diagnose.py) run the
configurations of one cell against each other: passes of every configuration, back to back, in mirrored orders, as
many as the cell's time allows, and ratios paired within a pass."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator


def pass_order(configs: list, rep: int) -> list:
    """The order of pass `rep`: mirrored pairs of passes, rotated by one more each pair, the second pass of a pair
    in reverse, so over a pair every configuration's mean position is the middle one and a drift of the machine's
    speed across a pass cancels (on the AVX2 CPU a one-off run of alternating calls slowed ~40 % over 12 calls,
    the later call of every pair the slower). Rotated by one each pass (before 2026-12-02), auto ran at mean
    position 4 of 0..5 over three passes, gamma 2 at 1, autoregressive decoding at 3, always after gamma 6."""
    k = (rep // 2) % len(configs)
    order = configs[k:] + configs[:k]
    return order[::-1] if rep % 2 else order


def pass_reps(minimum: int, maximum: int, min_cell_s: float = 0.0) -> Iterator[int]:
    """The passes of a cell: at least `minimum`, then more until the cell has run `min_cell_s` (counted from the
    first pass), at most `maximum`; it stops only before an even pass, so mirrored pairs stay whole."""
    t_cell = time.perf_counter()
    for rep in range(max(minimum, maximum)):
        if rep >= minimum and rep % 2 == 0 and time.perf_counter() - t_cell >= min_cell_s:
            return
        yield rep


def run_passes(labels: list[str], reps, run: Callable[[str, int], object],
               after_pass: Callable[[int, dict], bool] | None = None) -> dict[str, list]:
    """`run(label, rep)` for every label in each pass of `reps`, in `pass_order`; label -> the results, in pass
    order. `after_pass(rep, results)` is told each pass's end, and returns True to stop there."""
    results: dict[str, list] = {label: [] for label in labels}
    for rep in reps:
        for label in pass_order(list(labels), rep):
            results[label].append(run(label, rep))
        if after_pass is not None and after_pass(rep, results):
            break
    return results


def paired_median(a: list[float], b: list[float]) -> float:
    """The median of a_k / b_k over the calls or passes k, each pair run back to back."""
    return statistics.median(x / y for x, y in zip(a, b))
