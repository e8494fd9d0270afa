"""The trained models in models/ load through the engine and keep SD lossless with their drafts."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from moesd.engine.factory import EngineSpec, build_engine  # noqa: E402
from moesd.engine.loading import load_model  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models"
TARGET, DRAFT, DISTILLED = MODELS / "stdlib-moe-e32k4", MODELS / "stdlib-draft", MODELS / "smollm2-distilled-draft"
PROMPT = 'def fib(n):\n    """Return the n-th Fibonacci number."""\n'


def test_shipped_moe_target_and_draft_are_what_the_readme_says():
    target = load_model(str(TARGET), dtype="fp32")
    draft = load_model(str(DRAFT), dtype="fp32")
    assert target.model.config.model_type == "qwen3_moe" and (target.num_experts, target.top_k) == (32, 4)
    assert target.vocab_size == draft.vocab_size == 4096 and not target.random_weights
    assert sum(p.numel() for p in target.model.parameters()) == 21_155_840
    # The torch-free parser reads the config transformers 5 wrote (num_local_experts) to the same count.
    from moesd.perf.hf_config import load_config_json

    spec = load_config_json(str(TARGET))
    assert (spec.total_params, spec.num_experts, spec.experts_per_token) == (21_155_840, 32, 4)
    assert load_config_json(str(DRAFT)).total_params == sum(p.numel() for p in draft.model.parameters())
    assert target.tokenizer.decode(target.tokenizer.encode(PROMPT)) == PROMPT
    for d in (TARGET, DRAFT, DISTILLED):
        info = json.loads((d / "training.json").read_text())
        assert info["steps_done"] > 0 and info["final_validation"]["loss"] < 4.5, d.name


def _greedy(target: str, draft: str | None, prompts: list[str], n: int):
    engine = build_engine(EngineSpec(target=target, draft=draft, gamma=4 if draft else 0, dtype="fp32"))
    t = engine.target
    ids = [t.tokenizer.encode(p) for p in prompts]
    res = engine.generate(ids, n, t.tokenizer.eos_token_id)
    return res.token_ids, res.metrics


def test_stdlib_pair_is_lossless_and_the_draft_is_useful():
    prompts = [PROMPT, "import os\n\n\ndef walk(root):\n", "class Stack:\n    def __init__(self):\n"]
    ar, _ = _greedy(str(TARGET), None, prompts, 24)
    sd, metrics = _greedy(str(TARGET), str(DRAFT), prompts, 24)
    assert sd == ar
    assert metrics["acceptance"]["alpha"] > 0.3  # a random draft would almost never agree


def test_distilled_draft_keeps_smollm2_lossless():
    prompts = [PROMPT, "def is_prime(n):\n"]
    ar, _ = _greedy("smollm2-135m-instruct", None, prompts, 16)
    sd, metrics = _greedy("smollm2-135m-instruct", str(DISTILLED), prompts, 16)
    assert sd == ar
    assert metrics["acceptance"]["alpha"] > 0.15  # measured 0.29 here; an untrained draft is near 0
