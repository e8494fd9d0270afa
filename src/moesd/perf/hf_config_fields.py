"""What every config.json parser shares: typed access to the config's keys (every miss or wrong type a one-line
error), the attention and gated-FFN parameter counts, and the ArchSpec assembly."""

from __future__ import annotations

import math
from typing import Any

from moesd.errors import MoesdError
from moesd.perf.architecture import ArchSpec

_DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "half": 2.0, "float32": 4.0, "float": 4.0}
# MXFP4: 4-bit values plus one 8-bit scale per 32 values.
MXFP4_BYTES = 4.25 / 8.0


class Cfg:
    """Typed access to a config dict; every miss becomes a one-line MoesdError."""

    def __init__(self, raw: dict[str, Any], origin: str) -> None:
        self.raw = raw
        self.origin = origin
        family = raw.get("model_type", "?")
        if not isinstance(family, str):
            raise MoesdError(f"{origin}: 'model_type' must be a string, got {family!r}")
        self.family = family

    def int(self, key: str, default: int | None = None) -> int:
        value = self.raw.get(key, default)
        if value is None:
            raise MoesdError(f"{self.origin}: missing '{key}' (needed for family '{self.family}')")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or int(value) != value:
            raise MoesdError(f"{self.origin}: '{key}' must be an integer, got {value!r}")
        if value < 0:
            raise MoesdError(f"{self.origin}: '{key}' must be >= 0, got {value}")
        return int(value)

    def pos(self, key: str, default: int | None = None) -> int:
        value = self.int(key, default)
        if value < 1:
            raise MoesdError(f"{self.origin}: '{key}' must be >= 1, got {value}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise MoesdError(f"{self.origin}: '{key}' must be true or false, got {value!r}")
        return value

    def bytes_per_param(self) -> float:
        dtype = self.raw.get("torch_dtype", self.raw.get("dtype", "bfloat16")) or "bfloat16"
        quant = self.raw.get("quantization_config") or {}
        if isinstance(quant, dict) and quant.get("quant_method") == "fp8":
            return 1.0
        if dtype not in _DTYPE_BYTES:
            raise MoesdError(f"{self.origin}: unsupported dtype {dtype!r}")
        return _DTYPE_BYTES[dtype]


def gqa_attention(c: Cfg, qkv_bias: bool, o_bias: bool = False, qk_norm: int = 0) -> tuple[int, int, int, int]:
    """Params of one grouped-query attention block; returns (params, heads, kv_heads, head_dim)."""
    h = c.pos("hidden_size")
    heads = c.pos("num_attention_heads")
    kv_heads = c.pos("num_key_value_heads", heads)
    head_dim = c.pos("head_dim") if c.raw.get("head_dim") is not None else h // heads
    if head_dim * heads != h and "head_dim" not in c.raw:
        raise MoesdError(f"{c.origin}: hidden_size {h} is not divisible by {heads} heads")
    q, kv = heads * head_dim, kv_heads * head_dim
    params = h * q + 2 * h * kv + q * h
    if qkv_bias:
        params += q + 2 * kv
    if o_bias:
        params += h
    return params + qk_norm, heads, kv_heads, int(head_dim)


def gated_ffn(h: int, inter: int) -> int:
    return 3 * h * inter  # gate, up, down projections


# What a dense model has for each MoE field; parsers pass only what differs.
_DENSE_DEFAULTS = dict(num_experts=1, experts_per_token=1, num_moe_layers=0, expert_ffn_size=0,
                       shared_expert_ffn_size=0, dense_ffn_size=0, dense_ffn_params=0, shared_expert_params=0,
                       router_params=0, params_per_expert=0)


def assemble(c: Cfg, **kw) -> ArchSpec:
    for key, value in _DENSE_DEFAULTS.items():
        kw.setdefault(key, value)
    h = c.pos("hidden_size")
    vocab = c.pos("vocab_size")
    tied = kw.pop("tie_word_embeddings", c.bool("tie_word_embeddings", False))
    layers = c.pos("num_hidden_layers")
    embedding = kw.pop("embedding_params", vocab * h)
    norm = kw.pop("norm_params", (2 * layers + 1) * h)
    bpp = kw.pop("bytes_per_param", c.bytes_per_param())
    return ArchSpec(
        name=kw.pop("name"),
        family=c.family,
        num_layers=layers,
        hidden_size=h,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        embedding_params=embedding,
        lm_head_params=0 if tied else kw.pop("lm_head_params", vocab * h),
        norm_params=norm,
        bytes_per_param=bpp,
        expert_bytes_per_param=kw.pop("expert_bytes_per_param", bpp),
        **kw,
    )
