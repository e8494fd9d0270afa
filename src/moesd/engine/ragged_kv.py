"""A batched KV cache whose rows hold different numbers of valid tokens.

Rows accept different numbers of draft tokens, so after a verify step the new cache slots are valid
for some rows and rejected for others. Rather than shifting every row's cache each step, rejected
slots stay in place and are masked: the 2D attention mask marks which cache slots belong to each
row's sequence, and position ids count only valid slots, so RoPE sees an unbroken sequence.
transformers builds the causal mask in cache-slot space (query offset = cache length), so a masked
slot is never attended again. Memory stays bounded: all-rejected trailing columns are cropped at
once, and `compact` squeezes interior holes out when they exceed a fraction of the cache.

Example, two rows after prefill ("." = padding, x = rejected):
    row 0: a b c | verify d e f -> accepts d     mask 1 1 1 1 0 0   next position 4
    row 1: . g h | verify i j k -> accepts i j   mask 0 1 1 1 1 0   next position 4
The last column is rejected in both rows and is cropped immediately.
"""

from __future__ import annotations

import torch

from moesd.engine import hf_compat


class RaggedKV:
    def __init__(self, model, device: torch.device, compact_threshold: float = 0.5):
        self.model = model
        self.device = device
        self.cache = hf_compat.new_cache(model)
        self.mask = torch.zeros(0, 0, dtype=torch.bool, device=device)  # [B, L] slot belongs to the row
        self.next_pos = torch.zeros(0, dtype=torch.long, device=device)  # [B] position id of the next token
        self.compact_threshold = compact_threshold

    @property
    def batch_size(self) -> int:
        return int(self.next_pos.numel())

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def extend(self, input_ids: torch.Tensor, valid: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        """Append a block of tokens per row; returns logits [B, T or logits_to_keep, V].

        input_ids, valid: [B, T]. Invalid slots are padding (any id) and are masked from the start.
        Valid tokens of a row must come after its invalid ones (left padding within the block).
        """
        if self.length == 0:
            self.mask = torch.zeros(input_ids.shape[0], 0, dtype=torch.bool, device=self.device)
            self.next_pos = torch.zeros(input_ids.shape[0], dtype=torch.long, device=self.device)
        positions = self.next_pos[:, None] + torch.cumsum(valid.long(), dim=1) - 1
        positions = positions.clamp(min=0)
        self.mask = torch.cat([self.mask, valid], dim=1)
        # Without holes or padding the mask says nothing: omitting it lets attention take its
        # plain causal path (always the case at B = 1, where rejected slots are cropped at once).
        full = bool(self.mask.all())
        logits = hf_compat.forward_with_cache(self.model, self.cache, input_ids, None if full else self.mask.long(),
                                              positions, logits_to_keep)
        self.next_pos = self.next_pos + valid.sum(dim=1)
        return logits

    def keep_last_block(self, keep: torch.Tensor) -> None:
        """After a block of T slots was appended, keep only the slots where keep [B, T] is True.

        The kept slots must be a prefix of the row's valid slots in the block (accepted drafts).
        """
        t = keep.shape[1]
        if t == 0:
            return
        block = self.mask[:, -t:]
        dropped = (block & ~keep).sum(dim=1)
        self.mask[:, -t:] = block & keep
        self.next_pos = self.next_pos - dropped
        self._crop_dead_tail()

    def _crop_dead_tail(self) -> None:
        alive = self.mask.any(dim=0)
        if alive.all():
            return
        last_alive = int(torch.nonzero(alive).max()) + 1 if alive.any() else 0
        dead = self.length - last_alive
        if dead > 0:
            hf_compat.crop_cache(self.cache, dead)
            self.mask = self.mask[:, :last_alive]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished sequences leave the batch)."""
        hf_compat.select_cache_rows(self.cache, rows)
        self.mask = self.mask[rows]
        self.next_pos = self.next_pos[rows]
        self._crop_dead_tail()
        self.compact()

    def add_rows(self, other: "RaggedKV") -> None:
        """Append another cache's rows (new sequences joining the batch: continuous batching). The shorter side
        is left-padded with masked slots so both hold the same number of slots."""
        n = max(self.length, other.length)
        for kv in (self, other):
            pad = n - kv.length
            if pad:
                hf_compat.pad_cache_left(kv.cache, pad)
                kv.mask = torch.cat([torch.zeros(kv.batch_size, pad, dtype=torch.bool, device=kv.device), kv.mask], 1)
        hf_compat.concat_cache_rows(self.cache, other.cache)
        self.mask = torch.cat([self.mask, other.mask], dim=0)
        self.next_pos = torch.cat([self.next_pos, other.next_pos])

    def hole_fraction(self) -> float:
        if self.length == 0:
            return 0.0
        return 1.0 - float(self.mask.sum()) / (self.batch_size * self.length)

    def compact(self, force: bool = False) -> None:
        """Move each row's valid slots to the right end (left padding), dropping shared padding."""
        if not force and self.hole_fraction() <= self.compact_threshold:
            return
        counts = self.mask.sum(dim=1)
        new_len = int(counts.max()) if counts.numel() else 0
        # For each row, the source slot of every target column; padding columns point at slot 0.
        order = torch.argsort((~self.mask).to(torch.int8) * 2 - 1, dim=1, stable=True)  # valid slots first, in order
        cols = torch.arange(new_len, device=self.device)
        src_rank = cols[None, :] - (new_len - counts)[:, None]  # rank among the row's valid slots
        is_valid = src_rank >= 0
        src = torch.gather(order, 1, src_rank.clamp(min=0))
        hf_compat.gather_cache_slots(self.cache, src, is_valid)
        self.mask = is_valid
