"""The sweep's JSONL results file: one line per completed point, rewritten atomically after each point.

Rewriting through a temporary file and a rename means a crash, kill or full disk never leaves a partial
line and never loses a completed point; `--resume` skips the points whose key is already present. One
writer at a time: an exclusive lock (flock on a hidden `.NAME.lock` beside the file) is taken before the
file is read, so a second sweep on the same file refuses at once instead of overwriting the first's points.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from moesd.atomic_io import check_writable, write_text_atomic
from moesd.bench.record import BenchRecord, read_bench_records
from moesd.errors import MoesdError


class ResultsFile:
    def __init__(self, path: str | Path, resume: bool, skip_bad_lines: bool = False):
        self.path = Path(path)
        self.records: list[BenchRecord] = []
        self.skipped_lines: list[int] = []
        check_writable(self.path)
        self._lock = _exclusive_lock(self.path)
        try:
            if self.path.exists():
                if not resume:
                    raise MoesdError(f"{self.path} exists: pass --resume to continue it, or choose another -o")
                self.records = read_bench_records(self.path, skip_bad_lines, self.skipped_lines)
        except BaseException:
            self.close()
            raise
        self.keys = {r.key for r in self.records}

    def has(self, key: str) -> bool:
        return key in self.keys

    def add(self, record: BenchRecord) -> None:
        text = "".join(json.dumps(r.to_dict(), allow_nan=False) + "\n" for r in [*self.records, record])
        write_text_atomic(self.path, text)  # raises a one-line MoesdError on a full disk; the old file stays
        self.records.append(record)
        self.keys.add(record.key)

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _exclusive_lock(path: Path) -> int:
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise MoesdError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise MoesdError(f"{path} is being written by another moesd bench: wait for it, or choose another -o") from None
    return fd
