"""A draft whose vocabulary is a subset of the target's: draft id d stands for target id
`target_ids[d]`. The draft proposes only those ids (q = 0 for every other target token), which
keeps rejection sampling lossless: acceptance min(1, p/q) is only evaluated where q > 0, and the
residual max(0, p - q) gives the other tokens their full probability. Target ids outside the
subset that appear in the context are read by the draft as `unknown_draft_id`.

Stored as `moesd_vocab_map.json` beside the draft's config.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesd.errors import MoesdError
from moesd.jsonl import loads

VOCAB_MAP_FILE = "moesd_vocab_map.json"


@dataclass
class VocabMap:
    target_ids: np.ndarray  # [draft vocab] -> target id
    target_vocab: int
    unknown_draft_id: int

    @property
    def to_draft(self) -> np.ndarray:
        """[target vocab] -> draft id (unknown ids -> unknown_draft_id)."""
        table = np.full(self.target_vocab, self.unknown_draft_id, dtype=np.int64)
        table[self.target_ids] = np.arange(len(self.target_ids))
        return table

    @classmethod
    def most_frequent(cls, tokens: np.ndarray, target_vocab: int, size: int, always: list[int], unknown_target_id: int):
        """The `size` target ids most frequent in `tokens`, plus `always` (special tokens), in
        target-id order so the mapping is monotone."""
        if size > target_vocab:
            raise MoesdError(f"draft vocabulary {size} is larger than the target's {target_vocab}")
        counts = np.bincount(tokens.astype(np.int64), minlength=target_vocab)
        forced = sorted(set(int(i) for i in always if 0 <= i < target_vocab))
        counts[forced] = -1
        ranked = [int(i) for i in np.argsort(-counts, kind="stable") if i not in set(forced)]
        ids = np.array(sorted(forced + ranked[: size - len(forced)]), dtype=np.int64)
        unknown = int(np.searchsorted(ids, unknown_target_id))
        return cls(ids, target_vocab, unknown)

    def coverage(self, tokens: np.ndarray) -> float:
        return float(np.isin(tokens, self.target_ids).mean())

    def digest(self) -> str:
        return hashlib.sha256(self.target_ids.tobytes()).hexdigest()[:16]

    def to_json(self, **extra) -> str:
        return json.dumps({"target_vocab_size": self.target_vocab, "unknown_draft_id": self.unknown_draft_id,
                           **extra, "target_token_ids": self.target_ids.tolist()}) + "\n"

    @classmethod
    def read(cls, model_dir: Path) -> "VocabMap | None":
        path = Path(model_dir) / VOCAB_MAP_FILE
        if not path.is_file():
            return None
        try:
            raw = loads(path.read_text(encoding="utf-8"))
            ids = np.asarray(raw["target_token_ids"], dtype=np.int64)
            vmap = cls(ids, int(raw["target_vocab_size"]), int(raw["unknown_draft_id"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
            raise MoesdError(f"cannot read {path}: {exc}") from None
        if ids.ndim != 1 or len(ids) == 0 or ids.min() < 0 or ids.max() >= vmap.target_vocab \
                or len(np.unique(ids)) != len(ids) or not 0 <= vmap.unknown_draft_id < len(ids):
            raise MoesdError(f"{path}: target_token_ids must be distinct ids below target_vocab_size")
        return vmap
