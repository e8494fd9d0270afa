"""Algorithm 1 step times, Eq. 4 speedup, the physical prior's shapes, and the summaries built on them."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesd.errors import MoesdError
from moesd.perf.experts import RoutingCurve
from moesd.perf.hardware import hardware_preset
from moesd.perf.model_presets import model_preset
from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.schedule import best_gamma_schedule, vllm_config
from moesd.perf.speedup import speedup, target_efficiency
from moesd.perf.step_time import StepContext, step_times
from moesd.perf.summary import intervals, summarize

PAPER_B = [1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 80, 100]


def scenario(target, draft=None, hw="H800", tp=2, **kw):
    return Scenario.from_prior(model_preset(target).arch(), hardware_preset(hw), tp,
                               model_preset(draft).arch() if draft else None, **kw)


QWEN = ("Qwen2-57B-A14B-Instruct", "Qwen2-0.5B-Instruct")
OPT = ("OPT-30B", "OPT-350M")


def test_prior_reproduces_paper_shapes():
    """Issue acceptance: Qwen2-57B (2xH800, sigma 0.9, gamma 4) rises then falls; OPT-30B falls."""
    moe = predict(scenario(*QWEN), PAPER_B, [4], Acceptance(sigma=0.9))["speedup"][0]
    peak = int(np.argmax(moe))
    assert 0 < peak < len(PAPER_B) - 1
    assert np.all(np.diff(moe[: peak + 1]) > -1e-3) and moe[-1] < moe[peak] - 0.1
    assert moe[peak] > moe[0] + 1.0
    dense = predict(scenario(*OPT), PAPER_B, [4], Acceptance(sigma=0.9))["speedup"][0]
    assert np.all(np.diff(dense) <= 1e-9)
    assert dense[0] - dense[-1] > 1.0


def test_moe_beats_dense_target_efficiency_at_moderate_batch():
    moe = predict(scenario(*QWEN), [1, 40], [4], Acceptance(sigma=0.9))["target_efficiency"][0]
    dense = predict(scenario(*OPT), [1, 40], [4], Acceptance(sigma=0.9))["target_efficiency"][0]
    assert moe[0] < dense[0]  # small batch: verify loads new experts
    assert moe[1] > moe[0]  # moderate batch: all experts already loaded by decode


def test_alpha_limits():
    sc = scenario(*QWEN)
    g0 = predict(sc, [32], [4], Acceptance(alpha=0.0))
    t = {k: g0[k][0, 0] for k in ("target_decode_s", "target_verify_s", "draft_s", "reject_s")}
    # alpha = 0: one token per round (the bonus), so speedup = T_T(B,1) / round time < 1.
    round_s = 4 * t["draft_s"] + t["target_verify_s"] + t["reject_s"]
    assert g0["speedup"][0, 0] == pytest.approx(t["target_decode_s"] / round_s)
    g1 = predict(sc, [32], [4], Acceptance(alpha=1 - 1e-12))
    assert g1["speedup"][0, 0] == pytest.approx(5 * t["target_decode_s"] / round_s)


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0.0, 0.98), d=st.floats(0.001, 0.02), b=st.sampled_from(PAPER_B), gamma=st.integers(1, 8))
def test_speedup_increases_with_alpha(a, d, b, gamma):
    sc = scenario(*QWEN)
    lo = predict(sc, [b], [gamma], Acceptance(alpha=a))["speedup"][0, 0]
    hi = predict(sc, [b], [gamma], Acceptance(alpha=min(a + d, 0.999)))["speedup"][0, 0]
    assert hi > lo


def test_memory_bound_and_compute_bound_limits():
    sc = scenario(*OPT)
    eff = predict(sc, [1, 200_000], [4], Acceptance(sigma=0.9))["target_efficiency"][0]
    assert eff[0] == pytest.approx(1.0, abs=2e-3)  # purely memory-bound
    assert eff[1] == pytest.approx(1 / 5, rel=0.02)  # compute-bound: gamma+1 tokens cost gamma+1 times more
    paper = scenario(*OPT, verify_convention="paper")
    eff_p = predict(paper, [200_000], [4], Acceptance(sigma=0.9))["target_efficiency"][0, 0]
    assert eff_p == pytest.approx(1 / 4, rel=0.02)  # the paper's B*gamma verify tokens


def test_eq4_not_line_11():
    # Line 11's extra ar_time in the denominator caps speedup at sigma*(gamma+1)/2 = 2.25.
    assert speedup(0.9, 4, 1.0, 1.0, 0.0, 0.0) == pytest.approx(4.5)
    assert target_efficiency(2.0, 4.0) == 0.5


def test_shared_experts_always_loaded():
    sc = scenario(*QWEN)
    arch = sc.target
    # At one token the fixed cost includes the shared expert bytes on top of attention etc.
    shared_bytes = arch.shared_expert_params * arch.bytes_per_param
    assert sc.params.bias_s * 2 * 3350e9 == pytest.approx(arch.non_expert_bytes)
    assert arch.non_expert_bytes > shared_bytes > 0
    times = step_times(sc.params, sc.context, np.array([1.0]), np.array([4.0]), 64, 8)
    assert times["active_experts_decode"][0] == pytest.approx(8)  # routed count is unaffected


def test_expert_budget_caps_verify_only_and_helps_small_batches():
    full = scenario(*QWEN)
    capped = scenario(*QWEN, expert_budget=16)
    gf = predict(full, [1, 2, 64], [4], Acceptance(alpha=0.8))
    gc = predict(capped, [1, 2, 64], [4], Acceptance(alpha=0.8))
    assert np.all(gc["active_experts_verify"] <= 16 + 1e-9)
    np.testing.assert_allclose(gc["target_decode_s"], gf["target_decode_s"])  # decode never budgeted
    assert np.all(gc["speedup"][0, :2] > gf["speedup"][0, :2])
    same = predict(scenario(*QWEN, expert_budget=64), [1, 2, 64], [4], Acceptance(alpha=0.8))
    np.testing.assert_allclose(same["speedup"], gf["speedup"])  # C >= E changes nothing


def test_correlated_routing_raises_small_batch_speedup():
    curve = RoutingCurve(64, 8, tokens=(1, 5, 40), distinct_experts=(8, 16.0, 50.0))
    iid = predict(scenario(*QWEN), [1], [4], Acceptance(alpha=0.8))
    corr = predict(scenario(*QWEN, routing=curve), [1], [4], Acceptance(alpha=0.8))
    assert corr["active_experts_verify"][0, 0] == pytest.approx(16.0)
    assert corr["speedup"][0, 0] > iid["speedup"][0, 0]


def test_expert_parallel_charges_busiest_rank():
    ep1 = scenario(*QWEN)
    ep2 = scenario(*QWEN, ep=2)
    t1 = predict(ep1, [1, 100], [4], Acceptance(alpha=0.8))["target_decode_s"][0]
    t2 = predict(ep2, [1, 100], [4], Acceptance(alpha=0.8))["target_decode_s"][0]
    assert t2[0] > t1[0]  # 8 experts rarely split 4/4 over two ranks
    assert t2[1] == pytest.approx(t1[1], rel=1e-3)  # saturated: every rank loads all its experts
    with pytest.raises(MoesdError):
        scenario(*QWEN, tp=2, ep=3)


def test_intervals():
    assert intervals([1, 2, 4, 8, 16], [False, True, True, False, True]) == [[2, 4], [16, 16]]
    assert intervals([1, 2], [False, False]) == []


def test_summary_best_gamma_and_ranges():
    sc = scenario(*QWEN)
    grid = predict(sc, PAPER_B + [4096], [1, 2, 3, 4, 5, 6], Acceptance(alpha=0.8))
    s = summarize(grid)
    per = s["per_gamma"]["4"]
    assert per["rises_then_falls"]
    lo, hi = per["band_batch_sizes"][0]
    assert lo <= per["peak_batch_size"] <= hi
    best = {e["batch_size"]: e["gamma"] for e in s["best_gamma"]}
    assert best[4096] == 0  # compute-bound: SD loses, so no speculation
    assert best[40] >= 3  # with alpha 0.8, a long draft pays where verification is free
    assert s["beneficial_batch_sizes"][0][0] == 1


def test_vllm_schedule_covers_every_batch_size():
    sc = scenario(*QWEN)
    rows = best_gamma_schedule(sc, 2048, [1, 2, 3, 4, 5], Acceptance(alpha=0.7))
    assert rows[0][0] == 1 and rows[-1][1] == 2048
    for a, b in zip(rows, rows[1:]):
        assert b[0] == a[1] + 1 and b[2] != a[2]
    assert rows[-1][2] == 0
    assert set(vllm_config(rows)) == {"num_speculative_tokens_per_batch_size"}


def test_bad_grids_and_acceptance():
    sc = scenario(*QWEN)
    with pytest.raises(MoesdError, match="gamma must be >= 1"):
        predict(sc, [1], [0], Acceptance(alpha=0.5))
    with pytest.raises(MoesdError, match="batch size must be >= 1"):
        predict(sc, [0], [1], Acceptance(alpha=0.5))
    for bad in (dict(alpha=1.0), dict(alpha=-0.1), dict(sigma=0.0), dict(sigma=1.01), {}, dict(alpha=0.5, sigma=0.5)):
        with pytest.raises(MoesdError):
            Acceptance(**bad)
    with pytest.raises(MoesdError):
        StepContext(300.0, 2.0, verify_convention="neither")
