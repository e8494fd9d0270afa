"""Training text available offline: the Python standard library's own source.

Files are read in sorted order and every 50th file goes to validation, so the split does not
depend on the file system. Test suites are left out (they are mostly repetitive assertions). The
corpus fingerprint (Python version, file count, bytes) is stored with every checkpoint and model,
because another interpreter's stdlib is different text.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from moesd.errors import MoesdError

VALIDATION_EVERY = 50
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


@dataclass
class Corpus:
    root: str
    train_texts: list[str]
    valid_texts: list[str]

    @property
    def fingerprint(self) -> dict:
        h = hashlib.sha256()
        for t in self.train_texts + self.valid_texts:
            h.update(t.encode("utf-8", "replace"))
        return {"root": self.root, "python": sys.version.split()[0], "train_files": len(self.train_texts),
                "valid_files": len(self.valid_texts), "sha256": h.hexdigest()[:16]}


def default_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(root: str | None = None, max_files: int | None = None) -> Corpus:
    """All `.py` files under `root` (default: this interpreter's stdlib), tests excluded."""
    base = Path(root) if root else default_root()
    if not base.is_dir():
        raise MoesdError(f"corpus directory not found: {base}")
    files = sorted(p for p in base.rglob("*.py")
                   if not (SKIP_PARTS & set(p.relative_to(base).parts[:-1])) and not p.name.startswith("test_"))
    if max_files:
        files = files[:max_files]
    texts = []
    for p in files:
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue  # a handful of stdlib files are latin-1 test fixtures; not worth a decoder
    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        raise MoesdError(f"corpus {base} has fewer than 2 readable .py files")
    valid = texts[::VALIDATION_EVERY]
    train = [t for i, t in enumerate(texts) if i % VALIDATION_EVERY]
    return Corpus(str(base), train, valid)
