"""The sweep's JSONL results file: one line per completed point, rewritten atomically after each point.

Rewriting through a temporary file and a rename means a crash, kill or full disk never leaves a partial
line and never loses a completed point; `--resume` skips the points whose key is already present.
"""

from __future__ import annotations

import json
from pathlib import Path

from moesd.atomic_io import write_text_atomic
from moesd.bench.record import BenchRecord, read_bench_records
from moesd.errors import MoesdError


class ResultsFile:
    def __init__(self, path: str | Path, resume: bool, skip_bad_lines: bool = False):
        self.path = Path(path)
        self.records: list[BenchRecord] = []
        self.skipped_lines: list[int] = []
        if self.path.exists():
            if not resume:
                raise MoesdError(f"{self.path} exists: pass --resume to continue it, or choose another -o")
            self.records = read_bench_records(self.path, skip_bad_lines, self.skipped_lines)
        self.keys = {r.key for r in self.records}

    def has(self, key: str) -> bool:
        return key in self.keys

    def add(self, record: BenchRecord) -> None:
        text = "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in [*self.records, record])
        write_text_atomic(self.path, text)  # raises a one-line MoesdError on a full disk; the old file stays
        self.records.append(record)
        self.keys.add(record.key)
