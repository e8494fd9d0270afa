"""Expert accounting equals a brute-force count from the routers' own outputs; uniform routing
follows Eq. 8; MoE families are found without forking model code."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moesd.engine.expert_hooks import ExpertRecorder, find_experts_modules  # noqa: E402
from moesd.engine.proposers import NgramProposer, left_pad  # noqa: E402
from moesd.engine.ragged_kv import RaggedKV  # noqa: E402
from moesd.engine.spec_engine import SpecEngine  # noqa: E402
from moesd.perf.experts import expected_active_experts  # noqa: E402


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral", "olmoe", "qwen2_moe"])
def test_finds_one_experts_module_per_layer(tiny_model, family):
    assert len(find_experts_modules(tiny_model(family).model)) == 2
    assert find_experts_modules(tiny_model("llama").model) == []


def test_counts_equal_brute_force_from_router_outputs(tiny_model):
    target = tiny_model("qwen3_moe")
    router_indices = []
    gates = [layer.mlp.gate for layer in target.model.model.layers]
    handles = [g.register_forward_hook(lambda m, i, out: router_indices.append(out[2])) for g in gates]
    recorder = ExpertRecorder(target.model, 8, 2)
    try:
        kv = RaggedKV(target.model, torch.device("cpu"))
        prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]  # ragged: padding must not count
        ids, valid = left_pad(prompts, torch.device("cpu"))
        recorder.begin("prefill", valid)
        with torch.no_grad():
            kv.extend(ids, valid)
        routing = recorder.end()
    finally:
        for h in handles:
            h.remove()
        recorder.remove()
    real = valid.reshape(-1)
    brute = [int(torch.unique(ix[real]).numel()) for ix in router_indices]
    assert routing.num_tokens == 11
    assert routing.distinct_experts() == brute
    counts = routing.tokens_per_expert(8)
    assert [int(c.sum()) for c in counts] == [11 * 2, 11 * 2]
    with_padding = [int(torch.unique(ix).numel()) for ix in router_indices]
    assert with_padding >= brute


def test_uniform_routing_follows_eq8(tiny_model):
    target = tiny_model("qwen3_moe")
    recorder = ExpertRecorder(target.model, 8, 2, routing="uniform", seed=0)
    distinct = {t: [] for t in (1, 2, 3, 5)}
    try:
        for trial in range(150):
            for t in distinct:
                kv = RaggedKV(target.model, torch.device("cpu"))
                ids = torch.randint(1, 512, (1, t))
                valid = torch.ones(1, t, dtype=torch.bool)
                recorder.begin("verify", valid)
                with torch.no_grad():
                    kv.extend(ids, valid)
                distinct[t].extend(recorder.end().distinct_experts())
    finally:
        recorder.remove()
    for t, values in distinct.items():
        assert np.mean(values) == pytest.approx(float(expected_active_experts(t, 8, 2)), abs=0.15)


def test_engine_reports_experts_per_phase_and_routing_curve(tiny_model):
    target = tiny_model("olmoe")
    prompts = [[1, 2, 3, 1, 2, 3, 1, 2], [4, 5, 6, 4, 5, 6]]
    res = SpecEngine(target, NgramProposer(512, 1, 3), 3).generate(prompts, 12)
    experts = res.metrics["experts"]
    # The first round merges the prefill into verification; a last round with one token left decodes.
    assert {"prefill+verify", "verify"} <= set(experts["phases"]) <= {"prefill+verify", "verify", "decode"}
    verify = experts["phases"]["verify"]
    assert 2 <= verify["mean_distinct_experts_per_layer"] <= 8
    assert len(verify["per_layer_mean_distinct"]) == 2 and sum(verify["expert_load"]) > 0
    curve = res.metrics["routing_curve"]
    assert curve["num_experts"] == 8 and all(1 <= d <= 8 for _, d in curve["points"])
    ar = SpecEngine(target, None, 0).generate(prompts, 12)
    assert set(ar.metrics["experts"]["phases"]) == {"prefill", "decode"}
    assert ar.metrics["experts"]["phases"]["decode"]["mean_tokens"] <= 2


def test_uniform_routing_engine_leaves_no_hook_behind(tiny_model):
    """Engines share model objects: after a uniform-routing engine, a model-routing engine must see the
    router's own choices (a leftover hook once rewrote them silently)."""
    target = tiny_model("qwen3_moe")
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12]]
    SpecEngine(target, None, 0, routing="uniform").generate(prompts, 4)
    hooks = sum(len(m._forward_pre_hooks) for m in find_experts_modules(target.model))
    assert hooks == 0
    chosen = []
    handles = [layer.mlp.gate.register_forward_hook(lambda m, i, out: chosen.append(out[2]))
               for layer in target.model.model.layers]
    try:
        res = SpecEngine(target, None, 0, routing="model").generate(prompts, 4)
    finally:
        for h in handles:
            h.remove()
    prefill = res.metrics["experts"]["forwards"][0]
    assert prefill["phase"] == "prefill"
    assert prefill["distinct_experts"] == [int(torch.unique(ix).numel()) for ix in chosen[:2]]


def test_the_reports_records_are_what_dataclasses_asdict_gives_and_own_their_lists():
    """The run report's per-forward and per-step records (metrics.py) equal `dataclasses.asdict`'s, at a fraction of
    its cost, and changing a reported list leaves the run's own records alone."""
    from dataclasses import asdict

    from moesd.engine.metrics import ExpertForward, ExpertStats, StepRecord, steps_as_dicts

    steps = [StepRecord("decode", 4, 0, 0.1, 0.09), StepRecord("verify", 4, 2, 0.2, 0.1, 0.05, 0.04, 0.01, 9)]
    assert steps_as_dicts(steps) == [asdict(s) for s in steps]
    stats = ExpertStats(8, 2)
    stats.forwards = [ExpertForward("decode", 4, [3, 5], [2, 1]), ExpertForward("verify", 12, [7, 6], [4, 3])]
    stats.load = {p: np.zeros(8) for p in ("decode", "verify")}
    stats.layer_load = {p: np.zeros((2, 8)) for p in ("decode", "verify")}
    reported = stats.summary()["forwards"]
    assert reported == [asdict(f) for f in stats.forwards]
    reported[0]["distinct_experts"].append(8)
    assert stats.forwards[0].distinct_experts == [3, 5]
