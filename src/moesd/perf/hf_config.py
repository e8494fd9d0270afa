"""Parse a Hugging Face config.json into an `ArchSpec`, one function per model family.

Supported: dense llama, mistral, qwen2, qwen3, opt; MoE mixtral, qwen2_moe (shared expert),
qwen3_moe, olmoe, deepseek_v2 / deepseek_v3 / kimi_k2 (MLA, routed + shared experts), gpt_oss (MXFP4
experts), llama4 (interleaved MoE + shared expert, the text model of a multimodal config), glm4_moe
(GQA + routed and shared experts), minimax_m2. Each parser counts what transformers' module holds
(tests compare against the modules built on the meta device); multi-token-prediction layers a
checkpoint may carry are not counted, since transformers does not load them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from moesd.errors import MoesdError
from moesd.jsonl import read_json
from moesd.perf.architecture import ArchSpec
from moesd.perf.hf_config_fields import Cfg, assemble, gated_ffn, gqa_attention
from moesd.perf.hf_moe_families import (deepseek, glm4_moe, gpt_oss, llama4, minimax_m2, mixtral, olmoe,
                                        qwen_moe)


def _dense_llama_like(c: Cfg, name: str) -> ArchSpec:
    qkv_bias = c.family == "qwen2" or c.bool("attention_bias", False)
    qk_norm_per_layer = 0
    attn, heads, kv_heads, head_dim = gqa_attention(c, qkv_bias, o_bias=c.bool("attention_bias", False) and c.family != "qwen2")
    if c.family == "qwen3":
        qk_norm_per_layer = 2 * head_dim
    layers = c.pos("num_hidden_layers")
    h = c.pos("hidden_size")
    inter = c.pos("intermediate_size")
    return assemble(
        c,
        name=name,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        dense_ffn_size=inter,
        attention_params=layers * (attn + qk_norm_per_layer),
        dense_ffn_params=layers * gated_ffn(h, inter),
    )


def _opt(c: Cfg, name: str) -> ArchSpec:
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
    return assemble(
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


# Families whose layers we cannot count yet: the error names what is missing instead of a bare "unsupported".
UNSUPPORTED_FAMILIES = {
    "minimax": "MiniMax-Text-01 / MiniMax-M1 interleave lightning (linear) attention layers with softmax "
               "attention; their weights and KV state are not modelled",
    "llama4_vision_model": "a vision encoder, not a decoder",
}


PARSERS: dict[str, Callable[[Cfg, str], ArchSpec]] = {
    "llama": _dense_llama_like,
    "mistral": _dense_llama_like,
    "qwen2": _dense_llama_like,
    "qwen3": _dense_llama_like,
    "opt": _opt,
    "mixtral": mixtral,
    "qwen2_moe": qwen_moe,
    "qwen3_moe": qwen_moe,
    "olmoe": olmoe,
    "deepseek_v2": deepseek,
    "deepseek_v3": deepseek,
    "kimi_k2": deepseek,
    "gpt_oss": gpt_oss,
    "llama4": llama4,
    "llama4_text": llama4,
    "glm4_moe": glm4_moe,
    "minimax_m2": minimax_m2,
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
    spec = PARSERS[family](Cfg(raw, origin), name)
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
