"""Sparse upcycling: turn a dense Llama-style model into a Mixtral-style MoE twin with identical outputs.

Every expert is a copy of the dense MLP (gate_up = [gate; up], down = down) and a random router picks
top-K of E. Mixtral renormalises the top-K weights to sum to one, so the layer output is exactly the
dense MLP's whatever the router chooses: acceptance stays the dense model's while the cost of a verify
pass becomes MoE-shaped (distinct experts loaded). docs/notes/offline.md section 9.2 measured max |dlogit| = 0.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from moesd.engine.loading import LoadedModel
from moesd.errors import MoesdError


def upcycle(dense: LoadedModel, num_experts: int, top_k: int, seed: int = 0,
            experts_implementation: str = "grouped_mm") -> LoadedModel:
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = dense.model.config
    if cfg.model_type not in ("llama", "mistral"):
        raise MoesdError(f"upcycling supports llama/mistral models, not {cfg.model_type!r}")
    if getattr(cfg, "mlp_bias", False) or getattr(cfg, "attention_bias", False):
        raise MoesdError("upcycling needs bias-free attention and MLP (Mixtral has no biases)")
    if not 1 <= top_k <= num_experts:
        raise MoesdError(f"need 1 <= top_k <= num_experts, got {top_k}, {num_experts}")
    moe_cfg = MixtralConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=getattr(cfg, "head_dim", None),
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters=copy.deepcopy(getattr(cfg, "rope_parameters", None)),
        tie_word_embeddings=cfg.tie_word_embeddings, num_local_experts=num_experts, num_experts_per_tok=top_k,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        sliding_window=None,
    )
    torch.manual_seed(seed)
    with torch.device("meta"):
        moe = MixtralForCausalLM(moe_cfg)
    moe = moe.to_empty(device=dense.device).to(dense.dtype)
    moe.set_experts_implementation(experts_implementation)
    src = dense.model.state_dict()
    dst = moe.state_dict()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in dst.items():
            if ".mlp.experts." in name or ".mlp.gate." in name:
                continue
            tensor.copy_(src[name])
        for i, layer in enumerate(moe.model.layers):
            prefix = f"model.layers.{i}.mlp."
            gate, up, down = src[prefix + "gate_proj.weight"], src[prefix + "up_proj.weight"], src[prefix + "down_proj.weight"]
            layer.mlp.experts.gate_up_proj.copy_(torch.cat([gate, up], dim=0).expand(num_experts, -1, -1))
            layer.mlp.experts.down_proj.copy_(down.expand(num_experts, -1, -1))
            router = torch.randn(layer.mlp.gate.weight.shape, generator=g) * cfg.initializer_range
            layer.mlp.gate.weight.copy_(router.to(layer.mlp.gate.weight.dtype))
        # Non-persistent buffers (RoPE inverse frequencies) are not in the state dict and were left
        # uninitialised by to_empty: take them from the dense model, which computes them the same way.
        dense_buffers = dict(dense.model.named_buffers())
        for name, buf in moe.named_buffers():
            if name not in dense_buffers or dense_buffers[name].shape != buf.shape:
                raise MoesdError(f"upcycling: no dense counterpart for buffer {name}")
            buf.copy_(dense_buffers[name])
    if cfg.tie_word_embeddings:
        moe.tie_weights()
    moe.eval()
    return replace(dense, model=moe, name=f"{dense.name}-upcycled-E{num_experts}K{top_k}", num_experts=num_experts,
                   top_k=top_k, experts_implementation=moe.config._experts_implementation)
