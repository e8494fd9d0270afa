"""Model presets: the public config.json values (the keys our parser reads), each with its source.

`card_total_params` / `card_active_params` are what the model card or paper publishes, and
`card_active_convention` says how that vendor counts "active": ``all`` (every parameter a token
touches, both embedding matrices included: Qwen, Mistral, AI2, Meta), ``excl_input_embedding``
(the input embedding is a lookup: DeepSeek, OpenAI, Moonshot) or ``excl_embeddings`` (neither the input
embedding nor the output layer: Zhipu's GLM-4.5 report, MiniMax). Tests check our exact counts against
them within 2 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moesd.errors import MoesdError
from moesd.perf.architecture import ArchSpec
from moesd.perf.hf_config import arch_from_dict


@dataclass(frozen=True)
class ModelPreset:
    name: str
    config: dict[str, Any]
    source: str
    card_total_params: float
    card_active_params: float
    card_active_convention: str  # "all" | "excl_input_embedding" | "excl_embeddings"
    card_source: str

    def card_active_count(self, arch: ArchSpec) -> int:
        """Our exact active count under the vendor's convention, comparable with `card_active_params`."""
        if self.card_active_convention == "all":
            return arch.active_params
        if self.card_active_convention == "excl_input_embedding":
            return arch.active_params_excl_input_embedding
        return arch.active_params_excl_input_embedding - arch.lm_head_params

    @property
    def hf_id(self) -> str | None:
        """The Hugging Face repository the config comes from (what a serving engine loads)."""
        prefix = "https://huggingface.co/"
        return self.source[len(prefix):].split("/blob/")[0] if self.source.startswith(prefix) else None

    def arch(self) -> ArchSpec:
        return arch_from_dict(self.config, name=self.name, origin=f"preset {self.name}")


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


# Configs that several presets share: a released sibling (R1 is V3's architecture, Qwen3-Coder-30B is Qwen3-30B's)
# or a family whose sizes differ in a few keys (Llama 4 Scout / Maverick, gpt-oss 20b / 120b).
_DEEPSEEK_V3 = dict(model_type="deepseek_v3", hidden_size=7168, intermediate_size=18432,
                    moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128,
                    num_key_value_heads=128, n_routed_experts=256, n_shared_experts=1,
                    num_experts_per_tok=8, first_k_dense_replace=3, moe_layer_freq=1,
                    kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64,
                    v_head_dim=128, vocab_size=129280, tie_word_embeddings=False,
                    torch_dtype="bfloat16", quantization_config={"quant_method": "fp8"})
_QWEN3_30B_A3B = dict(model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144,
                      moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
                      num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                      vocab_size=151936, decoder_sparse_step=1, mlp_only_layers=[],
                      norm_topk_prob=True, tie_word_embeddings=False, torch_dtype="bfloat16")


def _llama4(**text) -> dict:
    """A Llama 4 multimodal config; `text` holds what differs between the text models."""
    return dict(model_type="llama4", tie_word_embeddings=False, torch_dtype="bfloat16",
                text_config=dict(model_type="llama4_text", hidden_size=5120, intermediate_size=8192,
                                 intermediate_size_mlp=16384, num_hidden_layers=48, num_attention_heads=40,
                                 num_key_value_heads=8, head_dim=128, num_experts_per_tok=1, vocab_size=202048,
                                 attention_bias=False, **text))


def _gpt_oss(**sizes) -> dict:
    return dict(model_type="gpt_oss", hidden_size=2880, intermediate_size=2880, num_attention_heads=64,
                num_key_value_heads=8, head_dim=64, num_experts_per_tok=4, vocab_size=201088, attention_bias=True,
                tie_word_embeddings=False, torch_dtype="bfloat16", quantization_config={"quant_method": "mxfp4"},
                **sizes)


MODEL_PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            "Qwen2-57B-A14B-Instruct",
            dict(model_type="qwen2_moe", hidden_size=3584, intermediate_size=18944,
                 moe_intermediate_size=2560, shared_expert_intermediate_size=20480,
                 num_experts=64, num_experts_per_tok=8, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, vocab_size=151936,
                 decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=False,
                 tie_word_embeddings=False, torch_dtype="bfloat16"),
            _hf("Qwen/Qwen2-57B-A14B-Instruct"),
            57e9, 14e9, "all", "Qwen2 technical report (arXiv 2407.10671) Table 1: 57B total, 14B activated",
        ),
        ModelPreset(
            "Qwen2-0.5B-Instruct",
            dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                 tie_word_embeddings=True, torch_dtype="bfloat16"),
            _hf("Qwen/Qwen2-0.5B-Instruct"),
            0.49e9, 0.49e9, "all", "Qwen2-0.5B model card: 0.49B parameters",
        ),
        ModelPreset(
            "Mixtral-8x7B-Instruct-v0.1",
            dict(model_type="mixtral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
                 num_experts_per_tok=2, vocab_size=32000, tie_word_embeddings=False,
                 torch_dtype="bfloat16"),
            _hf("mistralai/Mixtral-8x7B-Instruct-v0.1"),
            46.7e9, 12.9e9, "all", "Mixtral of Experts (arXiv 2401.04088): 47B total, 13B active; Mistral blog: 46.7B / 12.9B",
        ),
        ModelPreset(
            "OPT-30B",
            dict(model_type="opt", hidden_size=7168, ffn_dim=28672, num_hidden_layers=48,
                 num_attention_heads=56, vocab_size=50272, max_position_embeddings=2048,
                 word_embed_proj_dim=7168, do_layer_norm_before=True, enable_bias=True,
                 torch_dtype="float16"),
            _hf("facebook/opt-30b"),
            30e9, 30e9, "all", "OPT paper (arXiv 2205.01068) Table 1: 30B",
        ),
        ModelPreset(
            "OPT-350M",
            dict(model_type="opt", hidden_size=1024, ffn_dim=4096, num_hidden_layers=24,
                 num_attention_heads=16, vocab_size=50272, max_position_embeddings=2048,
                 word_embed_proj_dim=512, do_layer_norm_before=False, enable_bias=True,
                 torch_dtype="float16"),
            _hf("facebook/opt-350m"),
            # "350M" is the paper's nominal size; the released checkpoint holds 331.2M weights
            # (Hugging Face hub model-size badge: 331M params), which is what we check against.
            331.2e6, 331.2e6, "all", "facebook/opt-350m on the Hugging Face hub: 331M params (paper nominal 350M)",
        ),
        ModelPreset(
            "DeepSeek-V2-Lite",
            dict(model_type="deepseek_v2", hidden_size=2048, intermediate_size=10944,
                 moe_intermediate_size=1408, num_hidden_layers=27, num_attention_heads=16,
                 num_key_value_heads=16, n_routed_experts=64, n_shared_experts=2,
                 num_experts_per_tok=6, first_k_dense_replace=1, moe_layer_freq=1,
                 kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64,
                 v_head_dim=128, vocab_size=102400, tie_word_embeddings=False,
                 torch_dtype="bfloat16"),
            _hf("deepseek-ai/DeepSeek-V2-Lite"),
            15.7e9, 2.4e9, "excl_input_embedding",
            "DeepSeek-V2 paper (arXiv 2405.04434) Appendix B: 15.7B total, 2.4B activated",
        ),
        ModelPreset(
            "Qwen1.5-MoE-A2.7B",
            dict(model_type="qwen2_moe", hidden_size=2048, intermediate_size=5632,
                 moe_intermediate_size=1408, shared_expert_intermediate_size=5632, num_experts=60,
                 num_experts_per_tok=4, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=151936, decoder_sparse_step=1,
                 mlp_only_layers=[], tie_word_embeddings=False, torch_dtype="bfloat16"),
            _hf("Qwen/Qwen1.5-MoE-A2.7B"),
            14.3e9, 2.7e9, "all", "Qwen1.5-MoE blog / model card: 14.3B total, 2.7B activated",
        ),
        ModelPreset(
            "OLMoE-1B-7B",
            dict(model_type="olmoe", hidden_size=2048, intermediate_size=1024, num_experts=64,
                 num_experts_per_tok=8, num_hidden_layers=16, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=50304, tie_word_embeddings=False,
                 torch_dtype="bfloat16"),
            _hf("allenai/OLMoE-1B-7B-0924"),
            6.9e9, 1.3e9, "all", "OLMoE paper (arXiv 2409.02060): 6.9B total, 1.3B active",
        ),
        ModelPreset(
            "Qwen3-30B-A3B",
            _QWEN3_30B_A3B,
            _hf("Qwen/Qwen3-30B-A3B"),
            30.5e9, 3.3e9, "all", "Qwen3-30B-A3B model card: 30.5B total, 3.3B activated",
        ),
        ModelPreset(
            "SmolLM2-135M",
            dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                 tie_word_embeddings=True, torch_dtype="bfloat16"),
            _hf("HuggingFaceTB/SmolLM2-135M"),
            135e6, 135e6, "all", "SmolLM2 model card: 135M parameters",
        ),
        ModelPreset(
            "gpt-oss-20b",
            _gpt_oss(num_hidden_layers=24, num_local_experts=32),
            _hf("openai/gpt-oss-20b"),
            20.91e9, 3.61e9, "excl_input_embedding", "gpt-oss model card (arXiv 2508.10925) Table 1: 20.91B total, 3.61B active",
        ),
        ModelPreset(
            "DeepSeek-V3",
            _DEEPSEEK_V3,
            _hf("deepseek-ai/DeepSeek-V3"),
            # 671B main model; the released 685B adds the 14B multi-token-prediction module,
            # which transformers does not load and we do not count.
            671e9, 37e9, "all", "DeepSeek-V3 technical report (arXiv 2412.19437): 671B total, 37B activated",
        ),
        ModelPreset(
            "DeepSeek-R1",
            # The same architecture as DeepSeek-V3 (R1 is its reasoning post-training).
            _DEEPSEEK_V3,
            _hf("deepseek-ai/DeepSeek-R1"),
            671e9, 37e9, "all", "DeepSeek-R1 model card: 671B total, 37B activated (the V3 base architecture)",
        ),
        ModelPreset(
            "Qwen3-235B-A22B",
            dict(model_type="qwen3_moe", hidden_size=4096, intermediate_size=12288,
                 moe_intermediate_size=1536, num_experts=128, num_experts_per_tok=8,
                 num_hidden_layers=94, num_attention_heads=64, num_key_value_heads=4, head_dim=128,
                 vocab_size=151936, decoder_sparse_step=1, mlp_only_layers=[],
                 norm_topk_prob=True, tie_word_embeddings=False, torch_dtype="bfloat16"),
            _hf("Qwen/Qwen3-235B-A22B"),
            235e9, 22e9, "all", "Qwen3-235B-A22B model card: 235B total, 22B activated",
        ),
        ModelPreset(
            "Qwen3-Coder-30B-A3B-Instruct",
            _QWEN3_30B_A3B,
            _hf("Qwen/Qwen3-Coder-30B-A3B-Instruct"),
            30.5e9, 3.3e9, "all", "Qwen3-Coder-30B-A3B-Instruct model card: 30.5B total, 3.3B activated",
        ),
        ModelPreset(
            "Llama-4-Scout-17B-16E",
            _llama4(num_local_experts=16, interleave_moe_layer_step=1, use_qk_norm=True),
            _hf("meta-llama/Llama-4-Scout-17B-16E"),
            # The card's 109B includes the vision encoder (~1B) we do not count (it does not run while decoding).
            109e9, 17e9, "all", "Llama 4 model card: Scout 17B active, 109B total (vision encoder included)",
        ),
        ModelPreset(
            "Llama-4-Maverick-17B-128E",
            _llama4(num_local_experts=128, interleave_moe_layer_step=2, use_qk_norm=False),
            _hf("meta-llama/Llama-4-Maverick-17B-128E"),
            400e9, 17e9, "all", "Llama 4 model card: Maverick 17B active, 400B total (vision encoder included)",
        ),
        ModelPreset(
            "gpt-oss-120b",
            _gpt_oss(num_hidden_layers=36, num_local_experts=128),
            _hf("openai/gpt-oss-120b"),
            116.83e9, 5.13e9, "excl_input_embedding",
            "gpt-oss model card (arXiv 2508.10925) Table 1: 116.83B total, 5.13B active",
        ),
        ModelPreset(
            "GLM-4.5-Air",
            dict(model_type="glm4_moe", hidden_size=4096, intermediate_size=10944,
                 moe_intermediate_size=1408, num_hidden_layers=46, num_attention_heads=96,
                 num_key_value_heads=8, head_dim=128, n_routed_experts=128, n_shared_experts=1,
                 num_experts_per_tok=8, first_k_dense_replace=1, vocab_size=151552,
                 attention_bias=True, use_qk_norm=False, partial_rotary_factor=0.5,
                 num_nextn_predict_layers=1, tie_word_embeddings=False, torch_dtype="bfloat16"),
            _hf("zai-org/GLM-4.5-Air"),
            # GLM-4.5's report counts active parameters without the embedding and output layers (its 355B
            # sibling: 32.0B that way, 33.6B with them); the MTP layer is not loaded by transformers.
            106e9, 12e9, "excl_embeddings",
            "GLM-4.5 model card / report (arXiv 2508.06471): GLM-4.5-Air 106B total, 12B active",
        ),
        ModelPreset(
            "Kimi-K2-Instruct",
            dict(model_type="kimi_k2", hidden_size=7168, intermediate_size=18432,
                 moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=64,
                 num_key_value_heads=64, n_routed_experts=384, n_shared_experts=1,
                 num_experts_per_tok=8, first_k_dense_replace=1, moe_layer_freq=1,
                 kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64,
                 v_head_dim=128, vocab_size=163840, tie_word_embeddings=False,
                 torch_dtype="bfloat16", quantization_config={"quant_method": "fp8"}),
            _hf("moonshotai/Kimi-K2-Instruct"),
            1.04e12, 32e9, "excl_input_embedding",
            "Kimi K2 technical report (arXiv 2507.20534): 1.04T total, 32B activated (model card: 1T / 32B)",
        ),
        ModelPreset(
            "MiniMax-M2",
            dict(model_type="minimax_m2", hidden_size=3072, intermediate_size=1536, num_hidden_layers=62,
                 num_attention_heads=48, num_key_value_heads=8, head_dim=128, num_local_experts=256,
                 num_experts_per_tok=8, vocab_size=200064, use_qk_norm=True, rotary_dim=64,
                 tie_word_embeddings=False, torch_dtype="bfloat16",
                 quantization_config={"quant_method": "fp8"}),
            _hf("MiniMaxAI/MiniMax-M2"),
            230e9, 10e9, "excl_embeddings", "MiniMax-M2 model card: 230B total, 10B active",
        ),
    ]
}


def model_preset(name: str) -> ModelPreset:
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise MoesdError(
            f"unknown model preset {name!r}; valid: {', '.join(MODEL_PRESETS)}"
        ) from None
