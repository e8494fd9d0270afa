"""The shipped models' shapes. Transformers implements all three, so the engine loads them like
any Hugging Face checkpoint.

The target is a Qwen3-MoE with 32 experts, top-4, a load-balancing loss, and experts small enough
that the whole model ships at about 43 MB in bf16. The draft is a 2-layer dense Qwen3 on the same
tokenizer. The distilled draft is a 4-layer Llama (SmolLM2's family) whose output covers only the
8,192 SmolLM2 tokens most frequent in the corpus (98.7 % of its tokens; docs/notes/offline.md section 9.3).
"""

from __future__ import annotations

TARGET = dict(model_type="qwen3_moe", hidden_size=256, num_hidden_layers=6, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, intermediate_size=768, moe_intermediate_size=128,
              num_experts=32, num_experts_per_tok=4, norm_topk_prob=True, router_aux_loss_coef=0.01,
              decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=True,
              max_position_embeddings=2048, rope_theta=10000.0)
DRAFT = dict(model_type="qwen3", hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=64, intermediate_size=384, tie_word_embeddings=True,
             max_position_embeddings=2048, rope_theta=10000.0)
DISTILL_DRAFT = dict(model_type="llama", hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=64, intermediate_size=768, tie_word_embeddings=True,
                     max_position_embeddings=8192, rope_theta=100000.0)
ARCHITECTURES = {"target": TARGET, "draft": DRAFT, "distill": DISTILL_DRAFT}


def build_config(kind: str, vocab_size: int, eos_token_id: int, pad_token_id: int | None, overrides: dict | None = None):
    from transformers import AutoConfig

    from moesd.errors import MoesdError
    from moesd.perf.hf_config import arch_from_dict

    raw = dict(ARCHITECTURES[kind], **(overrides or {}))
    # A model the other commands would refuse (an unknown family, K > E, a wrongly typed size) is refused
    # before training starts, by the same torch-free parser `predict` uses.
    arch_from_dict(dict(raw, vocab_size=vocab_size), name=f"--set overrides of the {kind}", origin="--set")
    model_type = raw.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, vocab_size=vocab_size, bos_token_id=eos_token_id,
                                    eos_token_id=eos_token_id, pad_token_id=pad_token_id, **raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise MoesdError(f"--set: transformers refuses this {model_type} config ({exc})") from None
