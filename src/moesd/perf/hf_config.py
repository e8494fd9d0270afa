"""Parse a Hugging Face config.json into an `ArchSpec`, one function per model family.

Supported: dense llama, mistral, qwen2, qwen3, opt; MoE mixtral, qwen2_moe (shared expert),
qwen3_moe, olmoe, deepseek_v2 / deepseek_v3 / kimi_k2 (MLA, routed + shared experts), gpt_oss (MXFP4
experts), llama4 (interleaved MoE + shared expert, the text model of a multimodal config), glm4_moe
(GQA + routed and shared experts), minimax_m2. Each parser counts what transformers' module holds
(tests compare against the modules built on the meta device); multi-token-prediction layers a
checkpoint may carry are not counted, since transformers does not load them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from moesd.errors import MoesdError
from moesd.jsonl import read_json
from moesd.perf.architecture import ArchSpec

_DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "half": 2.0, "float32": 4.0, "float": 4.0}
# MXFP4: 4-bit values plus one 8-bit scale per 32 values.
_MXFP4_BYTES = 4.25 / 8.0


class _Cfg:
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


def _gqa_attention(c: _Cfg, qkv_bias: bool, o_bias: bool = False, qk_norm: int = 0) -> tuple[int, int, int, int]:
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


def _gated_ffn(h: int, inter: int) -> int:
    return 3 * h * inter  # gate, up, down projections


# What a dense model has for each MoE field; parsers pass only what differs.
_DENSE_DEFAULTS = dict(num_experts=1, experts_per_token=1, num_moe_layers=0, expert_ffn_size=0,
                       shared_expert_ffn_size=0, dense_ffn_size=0, dense_ffn_params=0, shared_expert_params=0,
                       router_params=0, params_per_expert=0)


def _common(c: _Cfg, **kw) -> ArchSpec:
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


def _dense_llama_like(c: _Cfg, name: str) -> ArchSpec:
    qkv_bias = c.family == "qwen2" or c.bool("attention_bias", False)
    qk_norm_per_layer = 0
    attn, heads, kv_heads, head_dim = _gqa_attention(c, qkv_bias, o_bias=c.bool("attention_bias", False) and c.family != "qwen2")
    if c.family == "qwen3":
        qk_norm_per_layer = 2 * head_dim
    layers = c.pos("num_hidden_layers")
    h = c.pos("hidden_size")
    inter = c.pos("intermediate_size")
    return _common(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        dense_ffn_size=inter,
        attention_params=layers * (attn + qk_norm_per_layer),
        dense_ffn_params=layers * _gated_ffn(h, inter),
    )


def _opt(c: _Cfg, name: str) -> ArchSpec:
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    ffn = c.pos("ffn_dim")
    vocab = c.pos("vocab_size")
    proj = c.pos("word_embed_proj_dim", h)
    bias = c.bool("enable_bias", True)
    heads = c.pos("num_attention_heads")
    attn = 4 * h * h + (4 * h if bias else 0)
    ffn_params = 2 * h * ffn + ((ffn + h) if bias else 0)
    # OPT learns positions with an offset of 2 (OPTLearnedPositionalEmbedding).
    positions = (c.pos("max_position_embeddings") + 2) * h
    projections = 2 * h * proj if proj != h else 0
    final_norm = c.bool("do_layer_norm_before", True) and not c.bool("_remove_final_layer_norm", False)
    ln = 2 * h if c.bool("layer_norm_elementwise_affine", True) else 0
    return _common(
        c,
        name=name,
        tie_word_embeddings=True,  # OPTForCausalLM ties lm_head to embed_tokens
        embedding_params=vocab * proj + positions,
        norm_params=layers * 2 * ln + (ln if final_norm else 0),
        num_attention_heads=heads,
        num_kv_heads=heads,
        head_dim=h // heads,
        dense_ffn_size=ffn,
        attention_params=layers * attn,
        dense_ffn_params=layers * ffn_params + projections,
    )


def _moe_layer_flags_qwen(c: _Cfg, layers: int, num_experts: int) -> list[bool]:
    step = c.pos("decoder_sparse_step", 1)
    only_mlp = set(c.raw.get("mlp_only_layers") or [])
    return [(i not in only_mlp) and num_experts > 0 and (i + 1) % step == 0 for i in range(layers)]


def _qwen_moe(c: _Cfg, name: str) -> ArchSpec:
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("num_experts", c.raw.get("num_local_experts"))  # transformers 5 writes the latter
    top_k = c.pos("num_experts_per_tok")
    moe_inter = c.pos("moe_intermediate_size")
    is_qwen2 = c.family == "qwen2_moe"
    attn, heads, kv_heads, head_dim = _gqa_attention(c, qkv_bias=is_qwen2 or c.bool("attention_bias", False))
    if not is_qwen2:
        attn += 2 * head_dim  # Qwen3 q_norm / k_norm over head_dim
    flags = _moe_layer_flags_qwen(c, layers, experts)
    n_moe = sum(flags)
    dense_inter = c.int("intermediate_size", 0)
    shared_inter = c.int("shared_expert_intermediate_size", 0) if is_qwen2 else 0
    # Qwen2-MoE gates its shared expert with a hidden -> 1 sigmoid gate.
    shared = n_moe * (_gated_ffn(h, shared_inter) + (h if shared_inter else 0))
    return _common(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_experts=experts,
        experts_per_token=top_k,
        num_moe_layers=n_moe,
        expert_ffn_size=moe_inter,
        shared_expert_ffn_size=shared_inter,
        dense_ffn_size=dense_inter if n_moe < layers else 0,
        attention_params=layers * attn,
        dense_ffn_params=(layers - n_moe) * _gated_ffn(h, dense_inter),
        shared_expert_params=shared,
        router_params=n_moe * h * experts,
        params_per_expert=_gated_ffn(h, moe_inter),
    )


def _every_layer_moe(c: _Cfg, name: str, experts_key: str, qk_norm: bool) -> ArchSpec:
    """Mixtral and OLMoE: every layer routes to E experts of intermediate_size, no shared expert."""
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    # transformers 5 saves either name (its attribute map), so accept the other as an alias.
    alias = "num_experts" if experts_key == "num_local_experts" else "num_local_experts"
    experts = c.pos(experts_key, c.raw.get(alias))
    inter = c.pos("intermediate_size")
    attn, heads, kv_heads, head_dim = _gqa_attention(c, qkv_bias=c.bool("attention_bias", False))
    if qk_norm:
        attn += heads * head_dim + kv_heads * head_dim  # OLMoE q_norm / k_norm over whole projections
    return _common(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_experts=experts,
        experts_per_token=c.pos("num_experts_per_tok"),
        num_moe_layers=layers,
        expert_ffn_size=inter,
        attention_params=layers * attn,
        router_params=layers * h * experts,
        params_per_expert=_gated_ffn(h, inter),
    )


def _mixtral(c: _Cfg, name: str) -> ArchSpec:
    return _every_layer_moe(c, name, "num_local_experts", qk_norm=False)


def _olmoe(c: _Cfg, name: str) -> ArchSpec:
    return _every_layer_moe(c, name, "num_experts", qk_norm=True)


def _deepseek(c: _Cfg, name: str) -> ArchSpec:
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    heads = c.pos("num_attention_heads")
    experts = c.pos("n_routed_experts")
    moe_inter = c.pos("moe_intermediate_size")
    nope, rope, v_dim = c.pos("qk_nope_head_dim"), c.pos("qk_rope_head_dim"), c.pos("v_head_dim")
    kv_rank = c.pos("kv_lora_rank")
    q_rank = c.raw.get("q_lora_rank")
    q_head = nope + rope
    # Multi-head latent attention (DeepSeek-V2 section 2.1): low-rank KV (and optionally Q).
    if q_rank:
        q_params = h * q_rank + q_rank + q_rank * heads * q_head
    else:
        q_params = h * heads * q_head
    attn = q_params + h * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v_dim) + heads * v_dim * h
    first_dense = c.int("first_k_dense_replace", 0)
    freq = c.pos("moe_layer_freq", 1)
    n_moe = sum(1 for i in range(layers) if i >= first_dense and i % freq == 0)
    shared_inter = c.int("n_shared_experts", 0) * moe_inter
    dense_inter = c.int("intermediate_size", 0)
    # V3 (and Kimi K2, a V3 architecture) adds a per-expert score-correction bias to its sigmoid router.
    router_bias = experts if c.family in ("deepseek_v3", "kimi_k2") else 0
    return _common(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=heads,
        head_dim=q_head,
        num_experts=experts,
        experts_per_token=c.pos("num_experts_per_tok"),
        num_moe_layers=n_moe,
        expert_ffn_size=moe_inter,
        shared_expert_ffn_size=shared_inter,
        dense_ffn_size=dense_inter if n_moe < layers else 0,
        attention_params=layers * attn,
        dense_ffn_params=(layers - n_moe) * _gated_ffn(h, dense_inter),
        shared_expert_params=n_moe * _gated_ffn(h, shared_inter),
        router_params=n_moe * (h * experts + router_bias),
        params_per_expert=_gated_ffn(h, moe_inter),
        kv_cache_elements_per_token=layers * (kv_rank + rope),  # MLA caches the latent and the rope key
    )


def _gpt_oss(c: _Cfg, name: str) -> ArchSpec:
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("num_local_experts")
    top_k = c.pos("num_experts_per_tok", c.raw.get("experts_per_token"))
    inter = c.pos("intermediate_size")
    attn, heads, kv_heads, head_dim = _gqa_attention(c, qkv_bias=True, o_bias=True)
    attn += heads  # attention sinks, one logit per head
    quant = c.raw.get("quantization_config") or {}
    mxfp4 = isinstance(quant, dict) and quant.get("quant_method") == "mxfp4"
    bpp = c.bytes_per_param()
    return _common(
        c,
        name=name,
        bytes_per_param=bpp,
        expert_bytes_per_param=_MXFP4_BYTES if mxfp4 else bpp,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_experts=experts,
        experts_per_token=top_k,
        num_moe_layers=layers,
        expert_ffn_size=inter,
        attention_params=layers * attn,
        router_params=layers * (h * experts + experts),
        # gate_up (with bias) and down (with bias) projections
        params_per_expert=2 * h * inter + 2 * inter + inter * h + h,
    )


def _glm4_moe(c: _Cfg, name: str) -> ArchSpec:
    """GLM-4.5: GQA attention (q/k/v bias, optional per-head q/k norm), the first layers dense, then routed
    experts plus shared experts behind a sigmoid router with a score-correction bias."""
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("n_routed_experts")
    moe_inter = c.pos("moe_intermediate_size")
    attn, heads, kv_heads, head_dim = _gqa_attention(c, qkv_bias=c.bool("attention_bias", False))
    if c.bool("use_qk_norm", False):
        attn += 2 * head_dim
    first_dense = c.int("first_k_dense_replace", 0)
    n_moe = max(0, layers - first_dense)
    dense_inter = c.int("intermediate_size", 0)
    shared_inter = c.int("n_shared_experts", 0) * moe_inter
    return _common(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_experts=experts,
        experts_per_token=c.pos("num_experts_per_tok"),
        num_moe_layers=n_moe,
        expert_ffn_size=moe_inter,
        shared_expert_ffn_size=shared_inter,
        dense_ffn_size=dense_inter if n_moe < layers else 0,
        attention_params=layers * attn,
        dense_ffn_params=(layers - n_moe) * _gated_ffn(h, dense_inter),
        shared_expert_params=n_moe * _gated_ffn(h, shared_inter),
        router_params=n_moe * (h * experts + experts),
        params_per_expert=_gated_ffn(h, moe_inter),
    )


def _minimax_m2(c: _Cfg, name: str) -> ArchSpec:
    """MiniMax-M2: every layer routes to E experts, no shared expert; q/k RMSNorm over whole projections;
    sigmoid router with a score-correction bias."""
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("num_local_experts", c.raw.get("num_experts"))
    inter = c.pos("intermediate_size")
    attn, heads, kv_heads, head_dim = _gqa_attention(c, qkv_bias=False)
    if c.bool("use_qk_norm", True):
        attn += (heads + kv_heads) * head_dim
    return _common(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_experts=experts,
        experts_per_token=c.pos("num_experts_per_tok"),
        num_moe_layers=layers,
        expert_ffn_size=inter,
        attention_params=layers * attn,
        router_params=layers * (h * experts + experts),
        params_per_expert=_gated_ffn(h, inter),
    )


def _llama4(c: _Cfg, name: str) -> ArchSpec:
    """Llama 4: MoE layers (top-k routed experts + one shared expert of the same size) every
    `interleave_moe_layer_step` layers (or at `moe_layers`), dense FFNs of `intermediate_size_mlp` between.
    A multimodal config ("llama4") holds the text model under `text_config`; the vision encoder is not
    counted (it does not run while decoding)."""
    if c.family == "llama4":
        text = c.raw.get("text_config")
        if not isinstance(text, dict):
            raise MoesdError(f"{c.origin}: a 'llama4' config needs a 'text_config' object")
        text = dict(text)
        text.setdefault("torch_dtype", c.raw.get("torch_dtype", c.raw.get("dtype", "bfloat16")))
        text.setdefault("tie_word_embeddings", c.raw.get("tie_word_embeddings", False))
        text["model_type"] = "llama4"
        c = _Cfg(text, f"{c.origin} text_config")
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("num_local_experts")
    inter = c.pos("intermediate_size")
    dense_inter = c.pos("intermediate_size_mlp", 16384)
    step = c.pos("interleave_moe_layer_step", 1)
    moe_layers = c.raw.get("moe_layers")
    if moe_layers is None:
        moe_layers = list(range(step - 1, layers, step))
    if not isinstance(moe_layers, list) or not all(isinstance(i, int) and 0 <= i < layers for i in moe_layers):
        raise MoesdError(f"{c.origin}: 'moe_layers' must list layer indices below {layers}")
    n_moe = len(set(moe_layers))
    attn, heads, kv_heads, head_dim = _gqa_attention(c, qkv_bias=c.bool("attention_bias", False),
                                                     o_bias=c.bool("attention_bias", False))
    return _common(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        num_experts=experts,
        experts_per_token=c.pos("num_experts_per_tok"),
        num_moe_layers=n_moe,
        expert_ffn_size=inter,
        shared_expert_ffn_size=inter,
        dense_ffn_size=dense_inter if n_moe < layers else 0,
        attention_params=layers * attn,  # the q/k norm is a weightless L2 norm
        dense_ffn_params=(layers - n_moe) * _gated_ffn(h, dense_inter),
        shared_expert_params=n_moe * _gated_ffn(h, inter),
        router_params=n_moe * h * experts,
        params_per_expert=_gated_ffn(h, inter),
    )


# Families whose layers we cannot count yet: the error names what is missing instead of a bare "unsupported".
UNSUPPORTED_FAMILIES = {
    "minimax": "MiniMax-Text-01 / MiniMax-M1 interleave lightning (linear) attention layers with softmax "
               "attention; their weights and KV state are not modelled",
    "llama4_vision_model": "a vision encoder, not a decoder",
}


PARSERS: dict[str, Callable[[_Cfg, str], ArchSpec]] = {
    "llama": _dense_llama_like,
    "mistral": _dense_llama_like,
    "qwen2": _dense_llama_like,
    "qwen3": _dense_llama_like,
    "opt": _opt,
    "mixtral": _mixtral,
    "qwen2_moe": _qwen_moe,
    "qwen3_moe": _qwen_moe,
    "olmoe": _olmoe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "kimi_k2": _deepseek,
    "gpt_oss": _gpt_oss,
    "llama4": _llama4,
    "llama4_text": _llama4,
    "glm4_moe": _glm4_moe,
    "minimax_m2": _minimax_m2,
}


def arch_from_dict(raw: dict[str, Any], name: str, origin: str | None = None) -> ArchSpec:
    origin = origin or name
    if not isinstance(raw, dict):
        raise MoesdError(f"{origin}: config must be a JSON object")
    family = raw.get("model_type")
    if family is None:
        raise MoesdError(f"{origin}: missing 'model_type'")
    if not isinstance(family, str):
        raise MoesdError(f"{origin}: 'model_type' must be a string, got {family!r}")
    if family in UNSUPPORTED_FAMILIES:
        raise MoesdError(f"{origin}: unsupported model family {family!r}: {UNSUPPORTED_FAMILIES[family]}")
    if family not in PARSERS:
        raise MoesdError(
            f"{origin}: unsupported model family {family!r} (supported: {', '.join(sorted(PARSERS))})"
        )
    spec = PARSERS[family](_Cfg(raw, origin), name)
    if spec.experts_per_token > spec.num_experts:
        raise MoesdError(
            f"{origin}: {spec.experts_per_token} experts per token exceeds {spec.num_experts} experts"
        )
    return spec


def load_config_json(path: str | Path) -> ArchSpec:
    """Read a config.json file (or a model directory containing one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    raw = read_json(p, "config file")
    return arch_from_dict(raw, name=(p.parent.name or p.stem) if p.name == "config.json" else p.stem, origin=str(p))
