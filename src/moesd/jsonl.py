"""Read JSON-lines files: one object per line, line numbers kept for error messages."""

from __future__ import annotations

import json
from pathlib import Path

from moesd.errors import MoesdError


def read_jsonl(path: str | Path, skip_bad_lines: bool = False, skipped: list[int] | None = None) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line. A malformed or truncated line stops with its
    number, unless `skip_bad_lines`, which drops it (and records its number in `skipped`)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise MoesdError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MoesdError(f"cannot read {path}: {exc}") from None
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
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
