"""config.json parsers of the MoE families: Qwen2/3-MoE, Mixtral, OLMoE, DeepSeek-V2/V3 and Kimi K2 (MLA),
gpt-oss (MXFP4 experts), GLM-4.5, MiniMax-M2, Llama 4. Each counts what transformers' module for the family holds
(tests/test_families_vs_transformers.py builds the modules on the meta device and compares)."""

from __future__ import annotations

from moesd.errors import MoesdError
from moesd.perf.architecture import ArchSpec
from moesd.perf.hf_config_fields import MXFP4_BYTES, Cfg, assemble, gated_ffn, gqa_attention


def _moe_layer_flags_qwen(c: Cfg, layers: int, num_experts: int) -> list[bool]:
    step = c.pos("decoder_sparse_step", 1)
    only_mlp = set(c.raw.get("mlp_only_layers") or [])
    return [(i not in only_mlp) and num_experts > 0 and (i + 1) % step == 0 for i in range(layers)]


def qwen_moe(c: Cfg, name: str) -> ArchSpec:
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("num_experts", c.raw.get("num_local_experts"))  # transformers 5 writes the latter
    top_k = c.pos("num_experts_per_tok")
    moe_inter = c.pos("moe_intermediate_size")
    is_qwen2 = c.family == "qwen2_moe"
    attn, heads, kv_heads, head_dim = gqa_attention(c, qkv_bias=is_qwen2 or c.bool("attention_bias", False))
    if not is_qwen2:
        attn += 2 * head_dim  # Qwen3 q_norm / k_norm over head_dim
    flags = _moe_layer_flags_qwen(c, layers, experts)
    n_moe = sum(flags)
    dense_inter = c.int("intermediate_size", 0)
    shared_inter = c.int("shared_expert_intermediate_size", 0) if is_qwen2 else 0
    # Qwen2-MoE gates its shared expert with a hidden -> 1 sigmoid gate.
    shared = n_moe * (gated_ffn(h, shared_inter) + (h if shared_inter else 0))
    return assemble(
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
        dense_ffn_params=(layers - n_moe) * gated_ffn(h, dense_inter),
        shared_expert_params=shared,
        router_params=n_moe * h * experts,
        params_per_expert=gated_ffn(h, moe_inter),
    )


def _every_layer_moe(c: Cfg, name: str, experts_key: str, qk_norm: bool) -> ArchSpec:
    """Mixtral and OLMoE: every layer routes to E experts of intermediate_size, no shared expert."""
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    # transformers 5 saves either name (its attribute map), so accept the other as an alias.
    alias = "num_experts" if experts_key == "num_local_experts" else "num_local_experts"
    experts = c.pos(experts_key, c.raw.get(alias))
    inter = c.pos("intermediate_size")
    attn, heads, kv_heads, head_dim = gqa_attention(c, qkv_bias=c.bool("attention_bias", False))
    if qk_norm:
        attn += heads * head_dim + kv_heads * head_dim  # OLMoE q_norm / k_norm over whole projections
    return assemble(
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
        params_per_expert=gated_ffn(h, inter),
    )


def mixtral(c: Cfg, name: str) -> ArchSpec:
    return _every_layer_moe(c, name, "num_local_experts", qk_norm=False)


def olmoe(c: Cfg, name: str) -> ArchSpec:
    return _every_layer_moe(c, name, "num_experts", qk_norm=True)


def deepseek(c: Cfg, name: str) -> ArchSpec:
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    heads = c.pos("num_attention_heads")
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
    # V3 (and Kimi K2, a V3 architecture) adds a per-expert score-correction bias to its sigmoid router.
    return _dense_first_then_routed(
        c, name, attn, heads, heads, q_head, router_bias=c.family in ("deepseek_v3", "kimi_k2"),
        kv_cache_elements_per_token=layers * (kv_rank + rope))  # MLA caches the latent and the rope key


def _dense_first_then_routed(c: Cfg, name: str, attn_per_layer: int, heads: int, kv_heads: int, head_dim: int,
                             router_bias: bool, **extra) -> ArchSpec:
    """DeepSeek and GLM-4.5 layers: the first `first_k_dense_replace` dense, then (every `moe_layer_freq`-th)
    `n_routed_experts` routed experts plus `n_shared_experts` shared ones of `moe_intermediate_size`."""
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("n_routed_experts")
    moe_inter = c.pos("moe_intermediate_size")
    first_dense = c.int("first_k_dense_replace", 0)
    freq = c.pos("moe_layer_freq", 1)
    n_moe = sum(1 for i in range(layers) if i >= first_dense and i % freq == 0)
    shared_inter = c.int("n_shared_experts", 0) * moe_inter
    dense_inter = c.int("intermediate_size", 0)
    return assemble(
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
        attention_params=layers * attn_per_layer,
        dense_ffn_params=(layers - n_moe) * gated_ffn(h, dense_inter),
        shared_expert_params=n_moe * gated_ffn(h, shared_inter),
        router_params=n_moe * (h * experts + (experts if router_bias else 0)),
        params_per_expert=gated_ffn(h, moe_inter),
        **extra,
    )


def gpt_oss(c: Cfg, name: str) -> ArchSpec:
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("num_local_experts")
    top_k = c.pos("num_experts_per_tok", c.raw.get("experts_per_token"))
    inter = c.pos("intermediate_size")
    attn, heads, kv_heads, head_dim = gqa_attention(c, qkv_bias=True, o_bias=True)
    attn += heads  # attention sinks, one logit per head
    quant = c.raw.get("quantization_config") or {}
    mxfp4 = isinstance(quant, dict) and quant.get("quant_method") == "mxfp4"
    bpp = c.bytes_per_param()
    return assemble(
        c,
        name=name,
        bytes_per_param=bpp,
        expert_bytes_per_param=MXFP4_BYTES if mxfp4 else bpp,
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


def glm4_moe(c: Cfg, name: str) -> ArchSpec:
    """GLM-4.5: GQA attention (q/k/v bias, optional per-head q/k norm), the first layers dense, then routed
    experts plus shared experts behind a sigmoid router with a score-correction bias."""
    attn, heads, kv_heads, head_dim = gqa_attention(c, qkv_bias=c.bool("attention_bias", False))
    if c.bool("use_qk_norm", False):
        attn += 2 * head_dim
    return _dense_first_then_routed(c, name, attn, heads, kv_heads, head_dim, router_bias=True)


def minimax_m2(c: Cfg, name: str) -> ArchSpec:
    """MiniMax-M2: every layer routes to E experts, no shared expert; q/k RMSNorm over whole projections;
    sigmoid router with a score-correction bias."""
    h = c.pos("hidden_size")
    layers = c.pos("num_hidden_layers")
    experts = c.pos("num_local_experts", c.raw.get("num_experts"))
    inter = c.pos("intermediate_size")
    attn, heads, kv_heads, head_dim = gqa_attention(c, qkv_bias=False)
    if c.bool("use_qk_norm", True):
        attn += (heads + kv_heads) * head_dim
    return assemble(
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
        params_per_expert=gated_ffn(h, inter),
    )


def llama4(c: Cfg, name: str) -> ArchSpec:
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
        c = Cfg(text, f"{c.origin} text_config")
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
    attn, heads, kv_heads, head_dim = gqa_attention(c, qkv_bias=c.bool("attention_bias", False),
                                                     o_bias=c.bool("attention_bias", False))
    return assemble(
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
        dense_ffn_params=(layers - n_moe) * gated_ffn(h, dense_inter),
        shared_expert_params=n_moe * gated_ffn(h, inter),
        router_params=n_moe * h * experts,
        params_per_expert=gated_ffn(h, inter),
    )
