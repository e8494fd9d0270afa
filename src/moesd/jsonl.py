"""Read JSON and JSON-lines files the one strict way: every failure is a one-line MoesdError.

Strict means: NaN, Infinity and numbers that overflow a float (1e400) are refused where they are read (they are
not JSON, and no moesd input may be non-finite), nesting deeper than `MAX_DEPTH` is refused before Python's
recursion limit turns it into a traceback, and bytes that are not UTF-8 are reported with the file's name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from moesd.errors import MoesdError

MAX_DEPTH = 64


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed (every number must be finite)")


def _depth_ok(text: str) -> bool:
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads(text: str, allow_nonfinite: bool = False):
    """json.loads, strict (see the module docstring); raises ValueError. `allow_nonfinite` lets NaN and
    Infinity through for readers that check each field themselves and name the column in their message."""
    if text.count("[") + text.count("{") > MAX_DEPTH and not _depth_ok(text):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if allow_nonfinite:
        return json.loads(text)
    return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)


def read_text(path: str | Path, what: str = "file") -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MoesdError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise MoesdError(f"{p} is a directory, not a {what}") from None
    except UnicodeDecodeError as exc:
        raise MoesdError(f"{p}: not UTF-8 text (byte {exc.start}): not a {what}") from None
    except OSError as exc:
        raise MoesdError(f"cannot read {p}: {exc.strerror or exc}") from None


def read_json(path: str | Path, what: str = "JSON file"):
    """The parsed content of a JSON file; any failure is one line naming the file."""
    text = read_text(path, what)
    try:
        return loads(text)
    except ValueError as exc:
        raise MoesdError(f"{path}: malformed JSON, not a valid {what} ({exc})") from None


def read_jsonl(path: str | Path, skip_bad_lines: bool = False, skipped: list[int] | None = None) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line. A malformed or truncated line stops with its
    number, unless `skip_bad_lines`, which drops it (and records its number in `skipped`)."""
    lines = read_text(path, "JSON-lines file").splitlines()
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = loads(line, allow_nonfinite=True)  # records are checked field by field, with the column named
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if skip_bad_lines:
                if skipped is not None:
                    skipped.append(i)
                continue
            raise MoesdError(f"{path}:{i}: malformed or truncated JSON line ({exc}); --skip-bad-lines skips it") from None
        out.append((i, rec))
    return out
