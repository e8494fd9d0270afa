"""Load speedup measurements (JSONL or CSV) for fitting, validating every value.

One measurement per line/row. Columns (aliases in brackets):
  batch_size [B], gamma, speedup, and sigma or alpha (sigma = Eq. 5 of alpha)
  experts_per_token [K, top_k] and num_experts [E]: required unless a target model supplies them
  optional per-stage times in seconds, which pin the time scale and more parameters:
  target_decode_s (T_T(B,1)), target_verify_s (T_T(B,verify)), draft_s (T_D(B,1), one draft
  token), reject_s (T_reject); sd_round_s (one whole SD round: gamma draft tokens + verify + rejection, what a
  serving engine's inter-token latency measures when it speculates; `moesd import` writes it)
  optional context: target, hardware, tp (strings/ints, used when the command line omits them)
`moesd bench` writes exactly these keys.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moesd.errors import MoesdError
from moesd.jsonl import read_jsonl, read_text
from moesd.perf.acceptance import sigma_from_alpha

ENGINE_STAGE_COLUMNS = ("target_decode_s", "target_verify_s", "draft_s", "reject_s")
STAGE_COLUMNS = ENGINE_STAGE_COLUMNS + ("sd_round_s",)
_ALIASES = {
    "B": "batch_size", "K": "experts_per_token", "top_k": "experts_per_token", "E": "num_experts",
}
_CONTEXT = ("target", "hardware", "tp")


@dataclass
class Measurements:
    batch_size: np.ndarray
    gamma: np.ndarray
    experts_per_token: np.ndarray
    num_experts: np.ndarray
    sigma: np.ndarray
    speedup: np.ndarray
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # NaN where a row lacks the stage
    context: dict = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.batch_size.size)

    def subset(self, idx) -> "Measurements":
        idx = np.asarray(idx)
        return Measurements(
            self.batch_size[idx], self.gamma[idx], self.experts_per_token[idx], self.num_experts[idx],
            self.sigma[idx], self.speedup[idx], {k: v[idx] for k, v in self.stages.items()},
            dict(self.context), self.source,
        )


def _number(value, column: str, where: str) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise MoesdError(f"{where}: column '{column}' is empty or not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise MoesdError(f"{where}: column '{column}' is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise MoesdError(f"{where}: column '{column}' is {value!r} (NaN/inf not allowed)")
    return x


def _records(path: Path, skip_bad_lines: bool) -> list[tuple[str, dict]]:
    if path.suffix.lower() != ".csv":
        return [(f"{path}:{i}", rec) for i, rec in read_jsonl(path, skip_bad_lines)]
    text = read_text(path, "measurement file").removeprefix("\ufeff")  # a spreadsheet's byte-order mark
    try:
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise MoesdError(f"{path}: empty CSV (no header)")
        return [(f"{path}:{i}", {k.strip(): v.strip() if isinstance(v, str) else v for k, v in row.items()
                                 if k is not None}) for i, row in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise MoesdError(f"{path}: malformed CSV ({exc})") from None


def load_measurements(path: str | Path, num_experts: int | None = None, experts_per_token: int | None = None,
                      skip_bad_lines: bool = False) -> Measurements:
    p = Path(path)
    return measurements_from_records(_records(p, skip_bad_lines), num_experts, experts_per_token, str(p))


def measurements_from_records(records: list[tuple[str, dict]], num_experts: int | None = None,
                              experts_per_token: int | None = None, source: str = "") -> Measurements:
    """Validate (where, record) pairs, e.g. `moesd bench` lines, into arrays. Points of a `--gammas ...,auto`
    series are left out: their gamma changed every step, so they are no measurement at one draft length."""
    records = [(w, r) for w, r in records if not (isinstance(r, dict) and r.get("gamma_policy") == "auto")]
    if not records:
        raise MoesdError(f"{source or 'measurements'}: no measurements (at a fixed draft length)")
    cols: dict[str, list[float]] = {c: [] for c in
                                    ("batch_size", "gamma", "experts_per_token", "num_experts", "sigma", "speedup")}
    stages: dict[str, list[float]] = {c: [] for c in STAGE_COLUMNS}
    context: dict = {}
    for where, raw in records:
        rec = {_ALIASES.get(k, k): v for k, v in raw.items()}
        for key in _CONTEXT:
            if rec.get(key) not in (None, ""):
                context.setdefault(key, rec[key])
        defaults = {"num_experts": num_experts, "experts_per_token": experts_per_token}
        for col in ("batch_size", "gamma", "speedup", "experts_per_token", "num_experts"):
            if rec.get(col) in (None, "") and defaults.get(col) is not None:
                rec[col] = defaults[col]
            if rec.get(col) in (None, ""):
                hint = " (or pass --target)" if col in defaults else ""
                raise MoesdError(f"{where}: missing column '{col}'{hint}")
            cols[col].append(_number(rec[col], col, where))
        if rec.get("sigma") not in (None, ""):
            sigma = _number(rec["sigma"], "sigma", where)
        elif rec.get("alpha") not in (None, ""):
            alpha = _number(rec["alpha"], "alpha", where)
            if not 0 <= alpha < 1:
                raise MoesdError(f"{where}: alpha must lie in [0, 1), got {alpha}")
            sigma = float(sigma_from_alpha(alpha, cols["gamma"][-1]))
        else:
            raise MoesdError(f"{where}: missing column 'sigma' (or 'alpha')")
        cols["sigma"].append(sigma)
        for col in STAGE_COLUMNS:
            value = rec.get(col)
            stages[col].append(math.nan if value in (None, "") else _number(value, col, where))
        _check_row(where, {k: v[-1] for k, v in cols.items()}, {k: v[-1] for k, v in stages.items()})
    seen: dict[tuple, str] = {}
    for i, where in enumerate(w for w, _ in records):
        point = tuple(cols[c][i] for c in ("batch_size", "gamma", "experts_per_token", "num_experts", "sigma",
                                           "speedup"))
        if point in seen:
            raise MoesdError(f"{where}: duplicates {seen[point]} (same B, gamma, K, E, sigma and speedup): a file "
                             f"read twice? Each measurement must appear once")
        seen[point] = where
    arrays = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    present = {k: np.asarray(v) for k, v in stages.items() if not np.all(np.isnan(v))}
    return Measurements(stages=present, context=context, source=source, **arrays)


def _check_row(where: str, row: dict, stages: dict) -> None:
    if row["batch_size"] < 1 or row["batch_size"] != int(row["batch_size"]):
        raise MoesdError(f"{where}: batch_size must be an integer >= 1, got {row['batch_size']}")
    if row["gamma"] < 1 or row["gamma"] != int(row["gamma"]):
        raise MoesdError(f"{where}: gamma must be an integer >= 1, got {row['gamma']}")
    if not 1 <= row["experts_per_token"] <= row["num_experts"]:
        raise MoesdError(f"{where}: need 1 <= experts_per_token <= num_experts")
    if not 0 < row["sigma"] <= 1:
        raise MoesdError(f"{where}: sigma must lie in (0, 1], got {row['sigma']}")
    if row["speedup"] <= 0:
        raise MoesdError(f"{where}: speedup must be > 0, got {row['speedup']}")
    for col, value in stages.items():
        if not math.isnan(value) and value < 0:
            raise MoesdError(f"{where}: {col} must be >= 0, got {value}")
