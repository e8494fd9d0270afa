"""MoE-Spec expert budgets: the cap holds, C >= E is exact, substitution keeps K experts, truncation
zeroes only tokens that lose every expert, prefill and decode are never budgeted."""

import pytest

torch = pytest.importorskip("torch")

from moesd.engine.expert_budget import ExpertBudget, apply_budget  # noqa: E402
from moesd.engine.expert_hooks import ExpertRecorder  # noqa: E402
from moesd.engine.sampling import SamplingParams  # noqa: E402
from moesd.engine.spec_engine import SpecEngine  # noqa: E402
from moesd.engine.proposers import DraftModelProposer  # noqa: E402
from moesd.errors import MoesdError  # noqa: E402

MOE_FAMILIES = ["qwen3_moe", "mixtral", "olmoe", "qwen2_moe"]
PROMPTS = [[5, 17, 33, 2, 9], [44, 3, 7], [100, 200, 300, 400, 11, 12, 13]]


def _engine(target, draft, budget=None, routing="model", gamma=3, measure_kl=False):
    proposer = DraftModelProposer(draft, target.vocab_size)
    return SpecEngine(target, proposer, gamma, SamplingParams(0.0), seed=0, routing=routing, budget=budget,
                      measure_kl=measure_kl)


def _verify_forwards(result):
    return [f for f in result.metrics["experts"]["forwards"] if f["phase"] == "verify"]


@pytest.mark.parametrize("family", MOE_FAMILIES)
@pytest.mark.parametrize("mode", ["substitution", "truncation"])
def test_never_more_than_c_experts_per_layer_in_verify(tiny_model, agreeing_draft, family, mode):
    target = tiny_model(family)
    budget = ExpertBudget(2 if mode == "substitution" else 1, mode=mode)
    res = _engine(target, agreeing_draft(target), budget).generate(PROMPTS, 12)
    verify = _verify_forwards(res)
    assert verify, "no verify forwards were recorded"
    assert max(max(f["distinct_experts"]) for f in verify) <= budget.budget
    # Prefill and decode are not capped: the prefill of 3 prompts loads more than C experts somewhere.
    prefill = [f for f in res.metrics["experts"]["forwards"] if f["phase"] == "prefill"]
    assert max(prefill[0]["distinct_experts"]) > budget.budget
    assert res.metrics["budget"]["lossless"] is False


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_budget_of_all_experts_reproduces_unbudgeted_output(tiny_model, agreeing_draft, family):
    target = tiny_model(family)
    draft = agreeing_draft(target)
    plain = _engine(target, draft).generate(PROMPTS, 12).token_ids
    full = _engine(target, draft, ExpertBudget(target.num_experts)).generate(PROMPTS, 12)
    assert full.token_ids == plain
    kl = _engine(target, draft, ExpertBudget(target.num_experts), measure_kl=True).generate(PROMPTS, 12)
    assert kl.token_ids == plain
    assert kl.metrics["budget"]["mean_kl_per_token"] == pytest.approx(0.0, abs=1e-9)


def test_small_budget_changes_the_verifier_and_kl_is_measured_without_side_effects(tiny_model, agreeing_draft):
    target = tiny_model("qwen3_moe")
    draft = agreeing_draft(target)
    plain = _engine(target, draft).generate(PROMPTS, 16)
    budgeted = _engine(target, draft, ExpertBudget(2)).generate(PROMPTS, 16)
    with_kl = _engine(target, draft, ExpertBudget(2), measure_kl=True).generate(PROMPTS, 16)
    assert with_kl.token_ids == budgeted.token_ids  # the untimed reference forward leaves no trace
    assert with_kl.metrics["budget"]["mean_kl_per_token"] > 1e-4
    assert with_kl.metrics["budget"]["kl_tokens"] > 0
    assert budgeted.token_ids != plain.token_ids  # C = K of E = 8 is a different model here


def test_sequence_scope_caps_each_sequence(tiny_model, agreeing_draft):
    target = tiny_model("olmoe")
    rec = ExpertRecorder(target.model, target.num_experts, target.top_k, budget=ExpertBudget(2, scope="sequence"),
                         keep_indices=True)
    try:
        ids = torch.randint(0, 512, (3, 4), generator=torch.Generator().manual_seed(0))
        valid = torch.ones(3, 4, dtype=torch.bool)
        rec.begin("verify", valid)
        with torch.no_grad():
            target.model(input_ids=ids)
        routing = rec.end()
    finally:
        rec.remove()
    for ix in routing.indices:
        per_row = ix.reshape(3, 4 * target.top_k)
        assert all(torch.unique(r).numel() <= 2 for r in per_row)
        assert torch.unique(ix).numel() > 2  # the rows chose different shortlists


def test_prefill_and_decode_forwards_are_untouched(tiny_model):
    target = tiny_model("qwen3_moe")
    ids = torch.randint(0, 512, (2, 6), generator=torch.Generator().manual_seed(1))
    valid = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        reference = target.model(input_ids=ids).logits
    rec = ExpertRecorder(target.model, target.num_experts, target.top_k, budget=ExpertBudget(2))
    try:
        outs = {}
        for phase in ("prefill", "decode", "draft", "verify"):
            rec.begin(phase, valid)
            with torch.no_grad():
                outs[phase] = target.model(input_ids=ids).logits
            rec.end()
    finally:
        rec.remove()
    for phase in ("prefill", "decode", "draft"):
        assert torch.equal(outs[phase], reference)
    assert not torch.allclose(outs["verify"], reference)


def _random_routing(tokens=64, experts=16, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(tokens, experts, generator=g), dim=-1)
    w, ix = probs.topk(k, dim=-1)
    return probs, ix, w / w.sum(-1, keepdim=True)


@pytest.mark.parametrize("budget", [4, 5, 8, 15])
def test_substitution_gives_every_token_k_distinct_shortlisted_experts(budget):
    probs, ix, w = _random_routing()
    valid = torch.ones(64, dtype=torch.bool)
    new_ix, new_w = apply_budget(ExpertBudget(budget), probs, ix, w, valid, 1, 0, normalize=True, reweight=True)
    assert new_ix.shape == ix.shape
    assert all(torch.unique(r).numel() == 4 for r in new_ix)
    assert torch.unique(new_ix).numel() <= budget
    torch.testing.assert_close(new_w.sum(-1), torch.ones(64))
    # Weights are the full softmax at the new picks, renormalised over them.
    picked = probs.gather(1, new_ix)
    torch.testing.assert_close(new_w, picked / picked.sum(-1, keepdim=True))
    # A token whose natural experts all made the shortlist keeps exactly its routing.
    shortlist = torch.zeros(16, dtype=torch.bool)
    shortlist[torch.unique(new_ix)] = True
    untouched = shortlist[ix].all(-1)
    assert untouched.any() or budget < 8
    assert torch.equal(new_ix[untouched], ix[untouched])
    torch.testing.assert_close(new_w[untouched], w[untouched])


def test_substitution_keeps_raw_softmax_weights_without_norm_topk_prob():
    probs, ix, _ = _random_routing()
    new_ix, new_w = apply_budget(ExpertBudget(6), probs, ix, probs.gather(1, ix), torch.ones(64, dtype=torch.bool),
                                 1, 0, normalize=False, reweight=True)
    torch.testing.assert_close(new_w, probs.gather(1, new_ix))


def test_truncation_zeroes_only_tokens_that_lose_every_expert():
    probs, ix, w = _random_routing(tokens=200, k=2)
    new_ix, new_w = apply_budget(ExpertBudget(3, mode="truncation"), probs, ix, w,
                                 torch.ones(200, dtype=torch.bool), 1, 0, normalize=True, reweight=True)
    shortlist = set(torch.unique(new_ix).tolist())
    assert len(shortlist) <= 3
    survives = torch.tensor([[int(e) in shortlist for e in row] for row in ix.tolist()])
    assert torch.equal(new_w != 0, survives)  # a slot keeps its natural weight iff its expert survives
    assert torch.equal(new_ix[survives], ix[survives])
    zeroed = (new_w == 0).all(-1)
    assert torch.equal(zeroed, ~survives.any(-1))
    assert zeroed.any() and not zeroed.all()


def test_truncation_output_is_zero_exactly_when_no_expert_survives(tiny_model):
    target = tiny_model("qwen3_moe")
    experts = next(m for m in target.model.modules() if type(m).__name__.endswith("Experts"))
    hidden = torch.randn(5, 64, generator=torch.Generator().manual_seed(2))
    ix = torch.tensor([[0, 1], [2, 3], [0, 5], [6, 7], [1, 0]])
    w = torch.full((5, 2), 0.5)
    probs = torch.zeros(5, 8)
    probs[:, 0], probs[:, 1] = 0.6, 0.4  # the batch mass ranks experts 0 and 1 first
    new_ix, new_w = apply_budget(ExpertBudget(2, mode="truncation"), probs, ix, w, torch.ones(5, dtype=torch.bool),
                                 1, 0, normalize=True, reweight=True)
    with torch.no_grad():
        out = experts(hidden, new_ix, new_w)
    zero_rows = (out == 0).all(-1).tolist()
    assert zero_rows == [False, True, False, True, False]


def test_static_ranking_uses_the_calibrated_order():
    probs, ix, w = _random_routing(experts=8, k=2)
    order = tuple([tuple([7, 6, 5, 4, 3, 2, 1, 0])])
    b = ExpertBudget(3, ranking="static", static_order=order)
    b.validate(8, 2, 1)
    new_ix, _ = apply_budget(b, probs, ix, w, torch.ones(64, dtype=torch.bool), 1, 0, True, True)
    assert set(torch.unique(new_ix).tolist()) <= {7, 6, 5}


def test_uniform_routing_is_budgeted_too(tiny_model, agreeing_draft):
    target = tiny_model("mixtral")
    res = _engine(target, agreeing_draft(target), ExpertBudget(3), routing="uniform").generate(PROMPTS, 10)
    assert max(max(f["distinct_experts"]) for f in _verify_forwards(res)) <= 3


@pytest.mark.parametrize("bad", [ExpertBudget(1), ExpertBudget(0, mode="truncation"), ExpertBudget(2, ranking="static"),
                                 ExpertBudget(2, ranking="static", static_order=((0, 0, 1, 2, 3, 4, 5, 6),) * 2),
                                 ExpertBudget(2, mode="drop")])
def test_impossible_budgets_are_refused(tiny_model, agreeing_draft, bad):
    target = tiny_model("qwen3_moe")
    with pytest.raises(MoesdError):
        _engine(target, agreeing_draft(target), bad).generate(PROMPTS, 4)


def test_budget_needs_moe_target_and_speculation(tiny_model, agreeing_draft):
    dense = tiny_model("llama")
    with pytest.raises(MoesdError, match="MoE"):
        _engine(dense, agreeing_draft(dense), ExpertBudget(2))
    moe = tiny_model("qwen3_moe")
    with pytest.raises(MoesdError, match="gamma 0"):
        SpecEngine(moe, None, 0, budget=ExpertBudget(2))


def test_budget_calibrate_cli_picks_smallest_passing_budget_and_static_order(tiny_dir, tmp_path, capsys):
    import json

    from moesd.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"token_ids": [5 + i, 6, 7, 8 + i, 9, 10]}) + "\n" for i in range(4)))
    out = tmp_path / "cal.json"
    target = str(tiny_dir("qwen3_moe"))
    # A draft model (random weights, another seed): every round verifies, so every budget gets judged; prompt
    # lookup on random text finds no n-gram and would decode instead.
    args = ["budget", "calibrate", "--target", target, "--draft", str(tiny_dir("qwen3_moe")), "--workload", str(prompts),
            "--batch-sizes", "1,4", "--gamma", "3", "--max-new-tokens", "12", "--dtype", "fp32"]
    assert main(args + ["--max-kl", "0.01", "-o", str(out)]) == 0
    cal = json.loads(out.read_text())
    for b in ("1", "4"):
        row = cal["batch_sizes"][b]
        tried = row["tried"]
        assert [t["budget"] for t in tried] == [2, 4][: len(tried)]  # K, 2K, ... from the smallest up
        if row["budget"] is not None:
            assert tried[-1]["passes"] and tried[-1]["mean_kl_per_token"] <= 0.01
            assert all(not t["passes"] for t in tried[:-1])
        else:
            assert not any(t["passes"] for t in tried)
    assert all(sorted(layer) == list(range(8)) for layer in cal["static_order"]) and len(cal["static_order"]) == 2
    capsys.readouterr()
    rc = main(["generate", "--target", target, "--draft-method", "ngram", "--prompt", "abcabcabc", "--dtype", "fp32",
               "--max-new-tokens", "8", "--expert-budget", "2", "--budget-static", str(out), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["metrics"]["budget"]["ranking"] == "static"
    assert main(args) == 2  # no quality floor
    assert "quality floor" in capsys.readouterr().err
