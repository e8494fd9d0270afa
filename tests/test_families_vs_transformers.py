"""Our parameter counts for the newer MoE families equal what transformers builds from the same config.

The modules are built on the meta device (no memory, no weights), shrunk so the test is fast; the shrinking
keeps every structural switch (dense-first layers, interleaved MoE, shared experts, q/k norms, biases).
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from moesd.perf.hf_config import arch_from_dict  # noqa: E402
from moesd.perf.model_presets import MODEL_PRESETS  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=48, moe_intermediate_size=32, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, vocab_size=300, num_hidden_layers=4)


def _shrunk(name: str) -> dict:
    cfg = dict(MODEL_PRESETS[name].config)
    cfg.pop("quantization_config", None)
    if "text_config" in cfg:
        text = dict(cfg["text_config"])
        text.update({k: v for k, v in SMALL.items() if k in text}, intermediate_size_mlp=80)
        cfg["text_config"] = text
        return cfg
    cfg.update({k: v for k, v in SMALL.items() if k in cfg})
    for key in ("n_routed_experts", "num_local_experts", "num_experts"):
        if key in cfg:
            cfg[key] = 8
    cfg["num_experts_per_tok"] = 2
    if "kv_lora_rank" in cfg:
        cfg.update(kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                   num_key_value_heads=4)
    return cfg


def _transformers_count(cfg: dict) -> int:
    cfg = dict(cfg)
    if cfg["model_type"] == "kimi_k2":  # Kimi K2 ships DeepseekV3ForCausalLM under its own model_type
        cfg["model_type"] = "deepseek_v3"
    config = transformers.AutoConfig.for_model(**cfg)
    if cfg["model_type"] == "llama4":
        config = config.text_config
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    # A sigmoid router's score-correction bias is a buffer in transformers but a tensor in the checkpoint.
    return sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias"))


@pytest.mark.parametrize("name", ["GLM-4.5-Air", "MiniMax-M2", "Llama-4-Scout-17B-16E",
                                  "Llama-4-Maverick-17B-128E", "Kimi-K2-Instruct", "gpt-oss-120b",
                                  "Qwen3-235B-A22B"])
def test_counts_equal_transformers_modules(name):
    cfg = _shrunk(name)
    ours = arch_from_dict(cfg, name=name)
    assert ours.total_params == _transformers_count(cfg)


def test_llama4_interleaving_and_shared_expert():
    scout = MODEL_PRESETS["Llama-4-Scout-17B-16E"].arch()
    maverick = MODEL_PRESETS["Llama-4-Maverick-17B-128E"].arch()
    assert (scout.num_moe_layers, maverick.num_moe_layers) == (48, 24)
    assert maverick.dense_ffn_size == 16384 and scout.dense_ffn_size == 0
    assert scout.shared_expert_ffn_size == scout.expert_ffn_size == 8192


def test_unsupported_family_names_what_is_missing():
    from moesd.errors import MoesdError

    with pytest.raises(MoesdError, match="lightning"):
        arch_from_dict({"model_type": "minimax", "hidden_size": 6144}, name="MiniMax-M1")
    with pytest.raises(MoesdError, match="text_config"):
        arch_from_dict({"model_type": "llama4"}, name="x")
