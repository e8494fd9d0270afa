"""Workloads and the upcycled MoE twin."""


import pytest

from moesd.bench.workloads import batch_prompts, length_stats, load_workload, tokenize_prompts
from moesd.errors import MoesdError


def test_builtin_workloads():
    he = load_workload("humaneval")
    assert len(he.prompts) == 164 and he.prompts[0].startswith("from typing import List")
    mt = load_workload("mtbench")
    assert len(mt.prompts) == 80 and "Hawaii" in mt.prompts[0]


def test_file_workload_and_batches(tmp_path):
    f = tmp_path / "w.jsonl"
    f.write_text('{"prompt": "a"}\n"b"\n{"token_ids": [1, 2]}\n')
    w = load_workload(str(f))
    assert w.prompts == ("a", "b", [1, 2])
    assert batch_prompts(w, 5) == ["a", "b", [1, 2], "a", "b"]
    f.write_text('{"prompt": 3}\n')
    with pytest.raises(MoesdError, match="w.jsonl:1: expected a prompt"):
        load_workload(str(f))
    with pytest.raises(MoesdError, match="unknown workload"):
        load_workload("gsm8k")


def test_tokenize_and_length_stats():
    from moesd.engine.tokenizer import ByteTokenizer

    ids = tokenize_prompts(ByteTokenizer(512), ["abc", [7, 8]], chat=False, max_tokens=2)
    assert ids == [[98, 99], [7, 8]]
    assert length_stats(ids) == {"prompts": 2, "min_tokens": 2, "median_tokens": 2, "max_tokens": 2}
    with pytest.raises(MoesdError, match="chat template"):
        tokenize_prompts(ByteTokenizer(512), ["abc"], chat=True)


def test_upcycled_twin_equals_dense(tiny_model):
    torch = pytest.importorskip("torch")
    from moesd.engine.upcycle import upcycle

    dense = tiny_model("llama")
    moe = upcycle(dense, num_experts=8, top_k=2, seed=3)
    assert moe.is_moe and moe.model.config.model_type == "mixtral"
    ids = torch.randint(0, 512, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = dense.model(ids).logits
        b = moe.model(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    # The routers differ per layer and pick different experts for different tokens.
    from moesd.engine.expert_hooks import ExpertRecorder

    rec = ExpertRecorder(moe.model, 8, 2)
    rec.begin("verify", torch.ones(3, 17, dtype=torch.bool))
    with torch.no_grad():
        moe.model(ids)
    assert max(rec.end().distinct_experts()) > 2
