"""Shared fixtures: tiny random-weight models of each family, built through the engine's own loader."""

import copy
import json

import pytest

torch = pytest.importorskip("torch")

BASE = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, initializer_range=0.2, tie_word_embeddings=False)
# initializer_range 0.2 (not 0.02) gives peaked logits and router scores, so batched and
# one-token-at-a-time fp32 forwards never meet a near-tie that last-bit differences could flip.
TINY = {
    "llama": dict(BASE, model_type="llama", intermediate_size=128),
    "qwen3_moe": dict(BASE, model_type="qwen3_moe", intermediate_size=128, moe_intermediate_size=32, head_dim=16,
                      num_experts=8, num_experts_per_tok=2, norm_topk_prob=True),
    "mixtral": dict(BASE, model_type="mixtral", intermediate_size=32, num_local_experts=8, num_experts_per_tok=2),
    "olmoe": dict(BASE, model_type="olmoe", intermediate_size=32, num_experts=8, num_experts_per_tok=2),
    "qwen2_moe": dict(BASE, model_type="qwen2_moe", intermediate_size=128, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64, num_experts=8, num_experts_per_tok=2),
}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")

    def make(family: str, **overrides):
        cfg = dict(TINY[family], **overrides)
        name = family + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
        d = root / name
        if not d.exists():
            d.mkdir()
            (d / "config.json").write_text(json.dumps(cfg))
        return d

    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from moesd.engine.loading import load_model

    cache = {}

    def make(family: str, seed: int = 0, **overrides):
        key = (family, seed, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = load_model(str(tiny_dir(family, **overrides)), dtype="fp32", seed=seed, random_weights=True)
        return cache[key]

    return make


def noisy_copy(loaded, noise: float, seed: int = 1):
    """A draft that agrees with the target often but not always: its weights plus Gaussian noise."""
    out = copy.copy(loaded)
    out.model = copy.deepcopy(loaded.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.model.parameters():
            p.add_((noise * torch.randn(p.shape, generator=g)).to(p.device))  # a CPU stream, on CUDA too
    return out


@pytest.fixture(scope="session")
def agreeing_draft():
    cache = {}

    def make(target, noise=0.02):
        key = (id(target), noise)
        if key not in cache:
            cache[key] = noisy_copy(target, noise)
        return cache[key]

    return make
