"""A preallocated KV cache whose slot index is the token's position: no padding slots, no holes, no compaction.

Each row has a length (its valid tokens, = the position of its next token). A block of T tokens per row is
written at the row's own positions, length .. length + n_valid - 1 (left-padding slots of the block go right
after them, where the next block overwrites them). A query at position p attends slots 0..p: every slot below
the row's length is its history, and slots length..p were written by this very block before attention ran, so
whatever stale data lies beyond (rejected drafts, earlier padding) is never read. Rejecting drafts is just
`length -= dropped`; the next block overwrites those slots.

Example, two rows after prefill (prompt lengths 3 and 2), then a verify block of 3 tokens each:
    row 0: a b c | d e f  -> accepts d     length 3 -> 4 (e, f stay in slots 4, 5 and are overwritten later)
    row 1: g h   | i j k  -> accepts i j   length 2 -> 4 (k stays in slot 4)

Compared with engine/ragged_kv.py (transformers' DynamicCache, concatenated every step, rejected slots masked
and squeezed out now and then) nothing is copied per step and with `max_rows` every forward has the same
shape per (rows, tokens per row): what CUDA graphs need. Attention reads the first `view` slots (the longest
row's end) in eager forwards, all `capacity` slots in graphed ones (engine/cuda_graphs.py).

Supported: every family whose layers all use one attention kind (full, or one sliding window), which is what
transformers' DynamicCache path computes; mixed full/sliding layer types fall back to the ragged cache.
"""

from __future__ import annotations

import torch

from moesd.engine import hf_compat

# keep_last_block spans at most one draft round: its pending block plus gamma - 1 one-token extends.
_RECENT_BLOCKS = 64


def unsupported_reason(config) -> str | None:
    """Why this model cannot use the static cache (None: it can)."""
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    if not kinds <= {"full_attention", "sliding_attention"} or len(kinds) > 1:
        return f"layer types {sorted(kinds)} mix attention kinds"
    return None


def sliding_window(config) -> int | None:
    """The window every layer uses, as transformers' masks apply it (None: full attention)."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return window if layer_types and layer_types[0] == "sliding_attention" else None
    if window is None or not getattr(config, "use_sliding_window", True):
        return None
    return int(window)


class StaticKV:
    """Same interface as RaggedKV (extend / keep_last_block / select_rows / add_rows / compact)."""

    compact_threshold = None  # nothing to compact: reported as such in the run's metrics

    def __init__(self, model, device: torch.device, capacity: int = 256, max_rows: int | None = None):
        self.model = model
        self.device = device
        self.cache = hf_compat.new_positional_cache(model)
        self.capacity = capacity  # slots per row; grows (doubling) when a block would not fit
        # Fixed shapes (what CUDA graphs replay): buffers of max_rows rows x capacity slots from the first
        # block, rows leaving or joining are moved in place, and `runner` (engine/cuda_graphs.py) runs the
        # decode / verify / draft forwards.
        self.max_rows = max_rows
        self.cache.max_rows = max_rows
        self.runner = None
        # A host-side upper bound of the longest row: lengths only grow by the block width, so graphed forwards
        # check capacity without reading `lengths` back from the device (a sync per forward).
        self._upper = 0
        self.lengths = torch.zeros(0, dtype=torch.long, device=device)  # [B] valid tokens = next position
        # Rows' valid slot count per column appended since the last keep_last_block (a draft round spans
        # several extends): what keep_last_block counts its drops against.
        self._recent_valid: list[torch.Tensor] = []
        self.window = sliding_window(model.config)
        self.additive_mask = model.config._attn_implementation == "eager"

    @property
    def batch_size(self) -> int:
        return int(self.lengths.numel())

    @property
    def length(self) -> int:
        """Slots the longest row uses (what the ragged cache reports as its width)."""
        return int(self.lengths.max()) if self.lengths.numel() else 0

    def hole_fraction(self) -> float:
        return 0.0

    def compact(self, force: bool = False) -> None:
        return None

    def block_positions(self, valid: torch.Tensor) -> torch.Tensor:
        """[B, T] write positions: valid tokens continue the row, padding goes after them."""
        n_valid = valid.sum(dim=1, keepdim=True)
        valid_pos = self.lengths[:, None] + torch.cumsum(valid.long(), dim=1) - 1
        pad_pos = self.lengths[:, None] + n_valid + torch.cumsum((~valid).long(), dim=1) - 1
        return torch.where(valid, valid_pos, pad_pos)

    def attention_mask(self, positions: torch.Tensor, view: int, dtype: torch.dtype) -> torch.Tensor:
        """[B, 1, T, view]: query at position p sees slots 0..p (and only the last `window` of them)."""
        slots = torch.arange(view, device=self.device)[None, None, None, :]
        pos = positions[:, None, :, None]
        mask = slots <= pos
        if self.window is not None:
            mask &= slots > pos - self.window
        if not self.additive_mask:
            return mask
        return torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill_(~mask, torch.finfo(dtype).min)

    def extend(self, input_ids: torch.Tensor, valid: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        """Append a block of tokens per row; returns logits [B, T or logits_to_keep, V].

        input_ids, valid: [B, T]; a row's valid tokens come after its invalid ones (left padding)."""
        rows, t = input_ids.shape
        if self.lengths.numel() != rows:  # the first block of an empty cache
            self.lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        positions = self.block_positions(valid)
        graphed = self.runner is not None and self.runner.handles(rows, t)
        end = self._upper + t
        if not graphed or end > self.capacity:  # eager forwards attend exactly up to the longest row's end
            end = int(self.lengths.max()) + t
        self._upper = end
        if end > self.capacity:
            self.capacity = max(end, 2 * self.capacity)
            hf_compat.grow_positional_cache(self.cache, self.capacity)
            if self.runner is not None:
                self.runner.reset()  # captured graphs point at the old buffers
        if graphed:
            logits = self.runner.run(input_ids, valid, positions, logits_to_keep)
        else:
            logits = self.forward(input_ids, positions, end, logits_to_keep)
        self._recent_valid.append(valid)
        if len(self._recent_valid) > 2 * _RECENT_BLOCKS:  # decode steps never call keep_last_block
            del self._recent_valid[:-_RECENT_BLOCKS]
        self.lengths = self.lengths + valid.sum(dim=1)
        return logits

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, view: int, logits_to_keep: int):
        """The model on a block whose write positions are set: attention over the first `view` slots."""
        self.cache.begin_block(positions, self.capacity, view)
        mask = self.attention_mask(positions, view, self.model.dtype)
        return hf_compat.forward_with_cache(self.model, self.cache, input_ids, mask, positions, logits_to_keep)

    def clear(self) -> None:
        """No rows (a fixed-shape cache reused by the next run; its buffers and graphs stay)."""
        self.lengths = self.lengths[:0]
        self._recent_valid = []
        self._upper = 0

    def keep_last_block(self, keep: torch.Tensor) -> None:
        """Of the last T appended columns, keep only the slots where keep [B, T] is True (a prefix of the
        row's valid slots there: accepted drafts); the rest become free again."""
        t = keep.shape[1]
        if t == 0:
            return
        recent = torch.cat(self._recent_valid, dim=1)[:, -t:] if self._recent_valid else keep
        self.lengths = self.lengths - (recent & ~keep).sum(dim=1)
        self._recent_valid = []

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished sequences leave the batch)."""
        hf_compat.select_cache_rows(self.cache, rows)
        self.lengths = self.lengths[rows]
        self._recent_valid = [v[rows] for v in self._recent_valid]

    def add_rows(self, other: "StaticKV") -> None:
        """Append another cache's rows (new sequences joining the batch: continuous batching)."""
        capacity = max(self.capacity, other.capacity)
        for kv in (self, other):
            if kv.capacity < capacity:
                kv.capacity = capacity
                hf_compat.grow_positional_cache(kv.cache, capacity)
                if kv.runner is not None:
                    kv.runner.reset()
        if self.max_rows:
            hf_compat.put_cache_rows(self.cache, other.cache, self.batch_size)
        else:
            hf_compat.concat_cache_rows(self.cache, other.cache)
        self.lengths = torch.cat([self.lengths, other.lengths])
        self._upper = max(self._upper, other._upper)
        self._recent_valid = []


def new_kv(kind: str, model, device: torch.device, graphs=None, role: str = "target"):
    """The cache a run uses for this model: the static one unless the model needs the ragged one.

    `graphs` (engine/cuda_graphs.GraphPlan): fixed shapes for that many rows and slots, forwards run by a
    GraphedForward (captured on CUDA); the plan keeps one such cache per role ("target", "draft") for every run
    of its engine with these shapes, so graphs are captured once, not per `generate` call."""
    from moesd.engine.ragged_kv import RaggedKV

    if kind == "static" and unsupported_reason(model.config) is None:
        if graphs is None:
            return StaticKV(model, device)
        return graphs.kv(model, device, role)
    return RaggedKV(model, device)
