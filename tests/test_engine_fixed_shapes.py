"""The fixed-shape path that CUDA graphs replay (engine/cuda_graphs.py), run uncaptured on the CPU: rows padded to
power-of-two buckets, one buffer per layer for every row, rows moved in place, attention over every slot.
Outputs must equal the plain path's token for token, and expert accounting must ignore the padding rows."""

import pytest

torch = pytest.importorskip("torch")

from test_engine_exactness import NEW, hf_generate, prompts_for  # noqa: E402
from moesd.engine.cuda_graphs import row_bucket  # noqa: E402
from moesd.engine.proposers import DraftModelProposer  # noqa: E402
from moesd.engine.sampling import SamplingParams  # noqa: E402
from moesd.engine.spec_engine import SpecEngine  # noqa: E402


def test_row_buckets():
    assert [row_bucket(b, 8) for b in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert row_bucket(5, 6) == 6 and row_bucket(64, 64) == 64


@pytest.mark.parametrize("family", ["llama", "qwen3_moe", "mixtral", "olmoe", "qwen2_moe"])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_fixed_shapes_are_exact(tiny_model, agreeing_draft, family, batch):
    target = tiny_model(family)
    prompts = prompts_for(batch)
    reference = hf_generate(target.model, prompts, NEW)
    ar = SpecEngine(target, None, 0, cuda_graphs=True).generate(prompts, NEW)
    assert ar.token_ids == reference
    graphs = ar.metrics["cuda_graphs"]
    assert graphs["capture"] is False and graphs["graphs_captured_this_run"] == 0
    assert graphs["fixed_shape_eager_forwards"] >= NEW - 1
    for gamma in (1, 3, 5):
        proposer = DraftModelProposer(agreeing_draft(target), target.vocab_size)
        sd = SpecEngine(target, proposer, gamma, cuda_graphs=True).generate(prompts, NEW)
        assert sd.token_ids == reference, f"gamma {gamma}"


def test_fixed_shapes_with_continuous_batching_eos_and_ragged_limits(tiny_model, agreeing_draft):
    """Rows finish at different times (EOS, per-request limits) and new requests take their place: the
    in-place row moves of the fixed buffers must keep every row's cache intact."""
    target = tiny_model("qwen3_moe")
    prompts = prompts_for(8)
    limits = [5, 20, 9, 14, 3, 20, 11, 7]
    plain = SpecEngine(target, None, 0).generate(prompts, limits, batch_size=3)
    eos = plain.token_ids[1][6]
    expected = SpecEngine(target, None, 0).generate(prompts, limits, eos_token_id=eos, batch_size=3)
    assert sum(r == "eos" for r in expected.finish_reasons) >= 1
    for gamma in (0, 2, 4):
        proposer = DraftModelProposer(agreeing_draft(target), target.vocab_size) if gamma else None
        res = SpecEngine(target, proposer, gamma, cuda_graphs=True).generate(prompts, limits, eos_token_id=eos,
                                                                             batch_size=3)
        assert res.token_ids == expected.token_ids, f"gamma {gamma}"
        assert res.finish_reasons == expected.finish_reasons


def test_padding_rows_are_not_counted_as_expert_loads(tiny_model, agreeing_draft):
    target = tiny_model("olmoe")
    prompts = prompts_for(3)  # 3 rows run in a bucket of 4: one padding row per forward
    runs = [SpecEngine(target, DraftModelProposer(agreeing_draft(target), target.vocab_size), 3, cuda_graphs=g)
            .generate(prompts, NEW) for g in (False, True)]
    assert runs[0].token_ids == runs[1].token_ids
    assert runs[0].metrics["experts"] == runs[1].metrics["experts"]
    assert runs[0].metrics["routing_curve"] == runs[1].metrics["routing_curve"]


def test_sampled_output_matches_the_plain_path(tiny_model, agreeing_draft):
    target = tiny_model("mixtral")
    prompts = prompts_for(3)
    out = [SpecEngine(target, DraftModelProposer(agreeing_draft(target), target.vocab_size), 3,
                      SamplingParams(temperature=1.0), seed=11, cuda_graphs=g).generate(prompts, NEW).token_ids
           for g in (False, True)]
    assert out[0] == out[1]


def test_an_engine_keeps_its_fixed_shape_buffers_between_runs(tiny_model, agreeing_draft):
    """Graphs are bound to buffer addresses: the engine keeps one fixed-shape cache per role and shape, and a
    later run (other prompts, fewer rows finishing differently) must start from a clean state in the same buffers."""
    target = tiny_model("olmoe")
    draft = agreeing_draft(target)
    engine = SpecEngine(target, lambda seed: DraftModelProposer(draft, target.vocab_size), 3, cuda_graphs=True)
    plain = SpecEngine(target, lambda seed: DraftModelProposer(draft, target.vocab_size), 3)
    first = engine.generate(prompts_for(4), NEW)
    (plan,) = engine._plans.values()
    kvs = dict(plan.kvs)
    assert set(kvs) == {"target", "draft"}
    for seed in (3, 4):
        prompts = prompts_for(4, seed=seed)
        assert engine.generate(prompts, NEW).token_ids == plain.generate(prompts, NEW).token_ids
    assert len(engine._plans) == 1 and all(plan.kvs[r] is kvs[r] for r in kvs)
    assert engine.generate(prompts_for(4), NEW).token_ids == first.token_ids
