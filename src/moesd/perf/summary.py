"""What a user asks of a prediction: the peak, where SD pays, and which draft length to use."""

from __future__ import annotations

import math

import numpy as np

from moesd.errors import MoesdError

# The paper's Fig. 4 marks the batch sizes whose speedup is at least peak / sqrt(2).
BAND_FRACTION = 1.0 / math.sqrt(2.0)


def intervals(batch_sizes, mask) -> list[list[int]]:
    """Maximal runs of consecutive grid points where mask holds, as [first, last] batch sizes.

    E.g. batch sizes [1, 2, 4, 8, 16] with mask [F, T, T, F, T] -> [[2, 4], [16, 16]].
    """
    out: list[list[int]] = []
    start = prev = None
    for b, m in zip(batch_sizes, mask):
        if m and start is None:
            start = b
        if not m and start is not None:
            out.append([int(start), int(prev)])
            start = None
        prev = b
    if start is not None:
        out.append([int(start), int(prev)])
    return out


def per_gamma_summary(batch_sizes, speedups) -> dict:
    speedups = np.asarray(speedups, dtype=float)
    i = int(np.argmax(speedups))
    peak = float(speedups[i])
    return {
        "peak_speedup": peak,
        "peak_batch_size": int(batch_sizes[i]),
        "beneficial_batch_sizes": intervals(batch_sizes, speedups >= 1.0),
        "band_batch_sizes": intervals(batch_sizes, speedups >= peak * BAND_FRACTION),
        "rises_then_falls": bool(0 < i < len(speedups) - 1),
    }


def best_gamma(batch_sizes, gammas, speedup_grid) -> list[dict]:
    """Per batch size, the gamma with the highest speedup; gamma 0 (no SD) where none beats 1."""
    grid = np.asarray(speedup_grid)
    out = []
    for j, b in enumerate(batch_sizes):
        i = int(np.argmax(grid[:, j]))
        s = float(grid[i, j])
        out.append({"batch_size": int(b), "gamma": int(gammas[i]) if s > 1.0 else 0, "speedup": max(s, 1.0)})
    return out


def fitting_columns(grid: dict) -> np.ndarray:
    """Batch sizes whose weights + KV cache fit the device; the others are never peaks, ranges or schedules."""
    fits = grid.get("fits_memory")
    ok = np.ones(grid["speedup"].shape[1], dtype=bool) if fits is None else np.asarray(fits)[0].astype(bool)
    if not ok.any():
        raise MoesdError("no batch size fits in device memory (weights + KV cache at this context length): "
                         "use more devices (--tp), a shorter --context-length or a smaller model")
    return ok


def summarize(grid: dict, notes: list[str] | None = None) -> dict:
    ok = fitting_columns(grid)
    notes = list(notes or [])
    all_b = grid["batch_size"][0]
    if not ok.all():
        notes.append("batch sizes " + ", ".join(f"{a}-{c}" if a != c else str(a) for a, c in intervals(all_b, ~ok))
                     + " do not fit in device memory (weights + KV cache): excluded")
    b = all_b[ok]
    g = grid["gamma"][:, 0]
    sp = grid["speedup"][:, ok]
    i, j = np.unravel_index(int(np.argmax(sp)), sp.shape)
    best = best_gamma(b, g, sp)
    return {
        "peak_speedup": float(sp[i, j]),
        "peak_batch_size": int(b[j]),
        "peak_gamma": int(g[i]),
        "beneficial_batch_sizes": intervals(b, np.max(sp, axis=0) >= 1.0),
        "per_gamma": {str(int(gamma)): per_gamma_summary(b, sp[k]) for k, gamma in enumerate(g)},
        "best_gamma": best,
        "notes": notes,
    }
