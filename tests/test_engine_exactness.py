"""Greedy SD must reproduce greedy autoregressive decoding token for token (fp32), for dense and MoE
families, ragged batches and every gamma; and the AR path must equal transformers' generate()."""

import pytest

torch = pytest.importorskip("torch")

from conftest import noisy_copy  # noqa: E402
from moesd.engine.proposers import DraftModelProposer, NgramProposer, left_pad  # noqa: E402
from moesd.engine.spec_engine import SpecEngine  # noqa: E402

LENGTHS = [5, 11, 3, 8, 2, 13, 7, 9]
NEW = 20


def prompts_for(batch, vocab=512, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in LENGTHS[:batch]]


def hf_generate(model, prompts, new):
    ids, valid = left_pad(prompts, torch.device("cpu"))
    out = model.generate(ids, attention_mask=valid.long(), max_new_tokens=new, do_sample=False, pad_token_id=0)
    return [row[ids.shape[1]:].tolist() for row in out]


@pytest.mark.parametrize("family", ["llama", "qwen3_moe", "mixtral", "olmoe", "qwen2_moe"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_greedy_sd_equals_autoregressive_and_generate(tiny_model, agreeing_draft, family, batch):
    target = tiny_model(family)
    prompts = prompts_for(batch)
    ar = SpecEngine(target, None, gamma=0).generate(prompts, NEW)
    assert ar.token_ids == hf_generate(target.model, prompts, NEW)
    agreeing = agreeing_draft(target)
    accepted_any = False
    for gamma in range(1, 6):
        sd = SpecEngine(target, DraftModelProposer(agreeing, target.vocab_size), gamma).generate(prompts, NEW)
        assert sd.token_ids == ar.token_ids, f"gamma {gamma}"
        accepted_any |= sd.metrics["acceptance"]["num_accepted_tokens"] > 0
    assert accepted_any  # the agreeing draft exercised partial acceptance, not only rejections
    # A draft that disagrees almost always (an unrelated random model).
    stranger = tiny_model("llama", seed=99)
    sd = SpecEngine(target, DraftModelProposer(stranger, target.vocab_size), 3).generate(prompts, NEW)
    assert sd.token_ids == ar.token_ids
    assert sd.metrics["acceptance"]["alpha"] < 0.2


def test_ngram_drafting_is_exact(tiny_model):
    target = tiny_model("qwen3_moe")
    prompts = [[7, 8, 9, 10, 7, 8, 9, 10, 7, 8], [3, 4, 5, 3, 4, 5, 3], [1, 2]]
    ar = SpecEngine(target, None, 0).generate(prompts, NEW)
    sd = SpecEngine(target, NgramProposer(target.vocab_size, 1, 3), 4).generate(prompts, NEW)
    assert sd.token_ids == ar.token_ids


def test_prompt_lookup_without_a_match_decodes_instead_of_verifying(tiny_model):
    """Random prompts and random-model text rarely repeat an n-gram: those steps must be plain decode steps
    (one token per row), not verify blocks of the last token repeated; outputs stay exact."""
    target = tiny_model("llama")
    prompts = prompts_for(3)
    ar = SpecEngine(target, None, 0).generate(prompts, NEW)
    res = SpecEngine(target, NgramProposer(target.vocab_size), 4).generate(prompts, NEW)
    assert res.token_ids == ar.token_ids
    kinds = [s["kind"] for s in res.metrics["steps"]]
    assert kinds.count("decode") > kinds.count("verify") and kinds[0] == "prefill+verify"
    # A batch mixing a repeating prompt with random ones: rows draft only what they found (ragged drafts,
    # right-aligned in the verify block), so fewer draft tokens than rows x gamma per verify, still exact.
    mixed = [[7, 8, 9, 10, 11] * 4, *prompts_for(2)]
    ar = SpecEngine(target, None, 0).generate(mixed, NEW)
    res = SpecEngine(target, NgramProposer(target.vocab_size, 1, 3), 4).generate(mixed, NEW)
    assert res.token_ids == ar.token_ids
    verify_rows = sum(s["batch_size"] for s in res.metrics["steps"] if s["kind"] in ("verify", "prefill+verify"))
    assert 0 < res.acceptance.num_draft_tokens < 4 * verify_rows


def test_ragged_finishing_at_eos(tiny_model, agreeing_draft):
    target = tiny_model("mixtral")
    prompts = prompts_for(8)
    ar = SpecEngine(target, None, 0).generate(prompts, NEW)
    # An EOS id that the reference produces in some rows, at different positions.
    first_seen = {}
    for row, toks in enumerate(ar.token_ids):
        for pos, t in enumerate(toks):
            first_seen.setdefault(t, {}).setdefault(row, pos)
    eos = max(first_seen, key=lambda t: (len(set(first_seen[t].values())), len(first_seen[t])))
    expected = [toks[: toks.index(eos) + 1] if eos in toks else toks for toks in ar.token_ids]
    assert 1 < sum(eos in toks for toks in ar.token_ids) < 8
    for gamma in (0, 2, 5):
        proposer = DraftModelProposer(agreeing_draft(target), target.vocab_size) if gamma else None
        res = SpecEngine(target, proposer, gamma).generate(prompts, NEW, eos_token_id=eos)
        assert res.token_ids == expected
        assert res.finish_reasons == ["eos" if eos in toks else "length" for toks in ar.token_ids]


def test_cache_stays_bounded_and_compaction_keeps_outputs_exact(tiny_model, monkeypatch):
    """Rows accept different numbers of drafts, so interior holes build up until compaction squeezes them
    out; the outputs after (many) compactions must still equal autoregressive decoding."""
    from moesd.engine.ragged_kv import RaggedKV

    target = tiny_model("qwen3_moe")
    compactions = []
    compact = RaggedKV.compact

    def spy(self, force=False):
        if self.model is target.model and (force or self.hole_fraction() > self.compact_threshold):
            compactions.append(self.hole_fraction())
        return compact(self, force)

    monkeypatch.setattr(RaggedKV, "compact", spy)
    # At the default threshold (holes > half the cache) these rows rarely get there, since all-rejected
    # trailing slots are cropped at once; a low threshold makes compaction run many times.
    init = RaggedKV.__init__
    monkeypatch.setattr(RaggedKV, "__init__", lambda self, model, device, compact_threshold=0.05:
                        init(self, model, device, compact_threshold))
    prompts = prompts_for(4)
    ar = SpecEngine(target, None, 0, kv_cache="ragged").generate(prompts, 120)
    stranger = noisy_copy(target, 0.05)  # rejects many drafts: most steps leave holes in some rows
    res = SpecEngine(target, DraftModelProposer(stranger, target.vocab_size, kv_cache="ragged"), 5,
                     kv_cache="ragged").generate(prompts, 120)
    steps = res.metrics["stages"]["steps"]
    assert steps > 40  # many rounds, each appending gamma + 1 = 6 slots
    assert compactions, "the target cache was never compacted: the test does not exercise compaction"
    assert res.token_ids == ar.token_ids
    longest = max(len(p) for p in prompts)
    # Without cropping and compaction the cache would hold ~steps * 6 slots.
    assert res.metrics["cache"]["max_slots"] <= 2 * (longest + 120) + 6
    assert res.metrics["cache"]["max_slots"] < steps * 6 / 2


def test_static_cache_needs_no_compaction_and_holds_exactly_the_sequence(tiny_model):
    """The static cache overwrites rejected slots in place: the longest row never uses more slots than its
    prompt + output, however many drafts were rejected, and outputs equal autoregressive decoding."""
    target = tiny_model("qwen3_moe")
    prompts = prompts_for(4)
    ar = SpecEngine(target, None, 0).generate(prompts, 120)
    stranger = noisy_copy(target, 0.05)
    res = SpecEngine(target, DraftModelProposer(stranger, target.vocab_size), 5).generate(prompts, 120)
    assert res.token_ids == ar.token_ids
    cache = res.metrics["cache"]
    assert cache["kind"] == "static" and cache["compact_threshold"] is None
    assert cache["max_slots"] <= max(len(p) + len(o) for p, o in zip(prompts, res.token_ids))
    assert res.metrics["acceptance"]["alpha"] < 0.9  # rejections happened


@pytest.mark.parametrize("family", ["llama", "mixtral", "qwen2_moe"])
def test_ragged_and_static_caches_agree(tiny_model, agreeing_draft, family):
    """The ragged DynamicCache path (kept for mixed attention layer types) stays exact too, greedy and sampled."""
    from moesd.engine.sampling import SamplingParams

    target = tiny_model(family)
    prompts = prompts_for(3)
    out = {}
    for kind in ("static", "ragged"):
        for temp in (0.0, 1.0):
            proposer = DraftModelProposer(agreeing_draft(target), target.vocab_size, kv_cache=kind)
            out[kind, temp] = SpecEngine(target, proposer, 3, SamplingParams(temperature=temp), seed=5,
                                         kv_cache=kind).generate(prompts, NEW).token_ids
    assert out["static", 0.0] == out["ragged", 0.0] == hf_generate(target.model, prompts, NEW)
    # Same seed, same random stream, same probabilities up to fp32 rounding: the same samples.
    assert out["static", 1.0] == out["ragged", 1.0]


def test_sliding_window_is_applied_by_the_static_cache(tiny_model):
    """A window shorter than the sequence: the static cache's own mask must cut attention as transformers does."""
    target = tiny_model("mixtral", sliding_window=6)
    prompts = prompts_for(3)
    ar = SpecEngine(target, None, 0).generate(prompts, NEW)
    assert ar.token_ids == hf_generate(target.model, prompts, NEW)
    full = tiny_model("mixtral")
    assert ar.token_ids != SpecEngine(full, None, 0).generate(prompts, NEW).token_ids  # the window mattered
