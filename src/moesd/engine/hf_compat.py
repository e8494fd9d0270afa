"""Every touch of transformers internals, in one place (tested per family in tests/test_hf_compat.py).

What we rely on beyond transformers' public API, and why:
- experts modules: families using `@use_experts_implementation` (Mixtral, Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3,
  gpt-oss) define `_apply_gate` on an `*Experts` class and call it as
  ``experts(hidden_states [T, H], top_k_index [T, K], top_k_weights [T, K])``: a forward pre-hook there sees
  and may replace every token's routing without forking model code;
- routers: the `gate` beside `experts` in a sparse-MoE block, a `*TopKRouter` returning
  (router_logits, weights, indices) and carrying `norm_topk_prob`;
- the cache: `DynamicCache(config=...)`, its `crop`, `batch_select_indices` and per-layer `keys` / `values`,
  passed as `cache` where the model's forward takes it (5.24) and as `past_key_values` before (5.17); and our own
  `Cache` of `CacheLayerMixin` layers (the static cache), which relies on a 4D attention mask being used as
  given (masking_utils returns it unchanged).
"""

from __future__ import annotations

import functools

import torch


# --- experts modules and routers ------------------------------------------------------------------
def find_experts_modules(model) -> list[torch.nn.Module]:
    """Experts modules in layer order (those wrapped by transformers' experts interface)."""
    return [m for m in model.modules() if hasattr(type(m), "_apply_gate") and "Experts" in type(m).__name__]


def find_routers(model, experts_modules: list[torch.nn.Module]) -> list[torch.nn.Module | None]:
    """The top-K router beside each experts module, or None where the family has none we can read."""
    parent_of = {}
    for module in model.modules():
        experts, gate = getattr(module, "experts", None), getattr(module, "gate", None)
        if isinstance(experts, torch.nn.Module) and isinstance(gate, torch.nn.Module):
            parent_of[id(experts)] = gate
    routers = []
    for m in experts_modules:
        gate = parent_of.get(id(m))
        routers.append(gate if gate is not None and type(gate).__name__.endswith("TopKRouter") else None)
    return routers


def router_logits(router_output) -> torch.Tensor:
    """The full router logits [T, E] from a top-K router's output tuple."""
    return router_output[0]


def router_normalizes(router: torch.nn.Module) -> bool:
    """Whether the model renormalises its top-K weights (Mixtral's router always does)."""
    return bool(getattr(router, "norm_topk_prob", True))


_EXPERTS_ARGS = ("hidden_states", "top_k_index", "top_k_weights")


def experts_call_routing(args, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(top_k_index, top_k_weights) from an experts call's arguments."""
    values = list(args) + [kwargs[n] for n in _EXPERTS_ARGS[len(args):]]
    return values[1], values[2]


def with_routing(args, kwargs, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
    """The same experts call with its routing replaced."""
    values = [args[0] if args else kwargs["hidden_states"], top_k_index, top_k_weights]
    n = min(len(args), 3)
    new_args = tuple(values[:n]) + tuple(args[3:])
    new_kwargs = dict(kwargs, **{k: v for k, v in zip(_EXPERTS_ARGS[n:], values[n:])})
    return new_args, new_kwargs


# --- the KV cache -----------------------------------------------------------------------------------
def new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


@functools.cache
def _cache_argument(model_class) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40); 5.17 has only
    the old one."""
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def forward_with_cache(model, cache, input_ids, attention_mask, position_ids, logits_to_keep: int) -> torch.Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=True, logits_to_keep=logits_to_keep, **{_cache_argument(type(model)): cache})
    return out.logits


def crop_cache(cache, drop_last: int) -> None:
    cache.crop(-drop_last)


def select_cache_rows(cache, rows: torch.Tensor) -> None:
    cache.batch_select_indices(rows)


def gather_cache_slots(cache, src: torch.Tensor, keep: torch.Tensor) -> None:
    """Rewrite every layer's keys/values so slot j of row b holds old slot src[b, j] (zeroed where not keep)."""
    for layer in cache.layers:
        if not getattr(layer, "is_initialized", True) or layer.keys is None or layer.keys.numel() == 0:
            continue
        idx = src[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
        k = keep[:, None, :, None].to(layer.keys.dtype)
        layer.keys = torch.gather(layer.keys, 2, idx) * k
        layer.values = torch.gather(layer.values, 2, idx.expand(-1, -1, -1, layer.values.shape[3])) * k


def _layers(cache):
    return [layer for layer in cache.layers
            if getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.numel() > 0]


def pad_cache_left(cache, slots: int) -> None:
    """Prepend `slots` zero slots to every row (they are masked by the caller)."""
    if slots <= 0:
        return
    for layer in _layers(cache):
        for name in ("keys", "values"):
            t = getattr(layer, name)
            pad = torch.zeros(*t.shape[:2], slots, t.shape[3], dtype=t.dtype, device=t.device)
            setattr(layer, name, torch.cat([pad, t], dim=2))


def concat_cache_rows(cache, other) -> None:
    """Append `other`'s rows to `cache` (both hold the same number of slots)."""
    for layer, extra in zip(cache.layers, other.layers):
        layer.keys = torch.cat([layer.keys, extra.keys], dim=0)
        layer.values = torch.cat([layer.values, extra.values], dim=0)


# --- the static (positional) cache of engine/static_kv.py ---------------------------------------------
@functools.cache
def _positional_layer_class():
    from transformers.cache_utils import CacheLayerMixin

    class PositionalLayer(CacheLayerMixin):
        """Keys/values [B, H, capacity, D] written at each token's own position (set per block by the owner);
        attention reads the first `view` slots. Masking is the owner's 4D mask, never transformers'."""

        is_sliding = False  # the window, if any, is in the owner's mask
        is_compileable = True

        def __init__(self, owner):
            super().__init__()
            self.owner = owner

        def lazy_initialization(self, key_states, value_states):
            _, h, _, d = key_states.shape
            b = self.owner.max_rows or key_states.shape[0]  # fixed shapes (CUDA graphs): every row up front
            c = self.owner.capacity
            self.keys = torch.zeros(b, h, c, d, dtype=key_states.dtype, device=key_states.device)
            self.values = torch.zeros(b, h, c, value_states.shape[3], dtype=value_states.dtype,
                                      device=value_states.device)
            self.device = key_states.device
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            pos = self.owner.positions[:, None, :, None]
            n, view = key_states.shape[0], self.owner.view  # rows of this forward (a prefix of the buffer's)
            keys, values = self.keys[:n], self.values[:n]
            keys.scatter_(2, pos.expand(-1, key_states.shape[1], -1, key_states.shape[3]), key_states)
            values.scatter_(2, pos.expand(-1, value_states.shape[1], -1, value_states.shape[3]), value_states)
            return keys[:, :, :view], values[:, :, :view]

        def get_mask_sizes(self, query_length):
            return self.owner.view, 0

        def get_seq_length(self):
            return self.owner.view

        def get_max_length(self):
            return self.owner.capacity

        def batch_select_indices(self, indices):
            if not self.is_initialized:
                return
            if self.owner.max_rows:  # in place: captured graphs hold these buffers' addresses
                n = indices.numel()
                self.keys[:n] = self.keys[indices]
                self.values[:n] = self.values[indices]
            else:
                self.keys, self.values = self.keys[indices], self.values[indices]

        def put_rows(self, other, start: int):
            """Rows start.. of a fixed-shape buffer take all of `other`'s rows (continuous batching)."""
            m, c = other.keys.shape[0], other.keys.shape[2]
            self.keys[start: start + m, :, :c] = other.keys
            self.values[start: start + m, :, :c] = other.values

    return PositionalLayer


@functools.cache
def _positional_cache_class():
    from transformers.cache_utils import Cache

    class PositionalCache(Cache):
        def __init__(self):
            super().__init__(layer_class_to_replicate=functools.partial(_positional_layer_class(), self))
            self.positions = None  # [B, T] of the block being written
            self.capacity = 0
            self.view = 0
            self.max_rows = None  # fixed shapes: buffers hold this many rows from the start

        def begin_block(self, positions, capacity, view):
            self.positions, self.capacity, self.view = positions, capacity, view

    return PositionalCache


def new_positional_cache(model):
    """A transformers Cache whose layers write each token at its own position (engine/static_kv.py)."""
    return _positional_cache_class()()


def grow_positional_cache(cache, capacity: int) -> None:
    """More slots per row, the old ones kept (a block would not fit)."""
    cache.capacity = capacity
    for layer in _layers(cache):
        for name in ("keys", "values"):
            t = getattr(layer, name)
            if t.shape[2] < capacity:
                grown = torch.zeros(*t.shape[:2], capacity, t.shape[3], dtype=t.dtype, device=t.device)
                grown[:, :, : t.shape[2]] = t
                setattr(layer, name, grown)


def put_cache_rows(cache, other, start: int) -> None:
    """Fixed-shape positional cache: rows start.. take `other`'s rows (a fresh prefill's cache)."""
    for layer, extra in zip(cache.layers, other.layers):
        if extra.is_initialized:
            if not layer.is_initialized:
                layer.lazy_initialization(extra.keys, extra.values)
            layer.put_rows(extra, start)
