"""The probe schedule of `--gamma auto` on its own: when a probe falls due, its budget, and its clock across calls."""

import math

import pytest

from moesd.engine.probe_schedule import ProbeSchedule
from moesd.errors import MoesdError


def test_close_verdicts_wait_doubling_and_far_ones_wait_the_longest():
    s = ProbeSchedule(first_probe=4, probe_every=16)
    waits = []
    for _ in range(4):
        steps = 0
        while not s.due(close=True):
            s.plain_step()
            steps += 1
        waits.append(steps)
        s.probed()
    assert waits == [5, 9, 17, 17]  # more than `wait` plain steps: 4, 8, then `probe_every` twice
    s.speculated()  # the policy chose a round itself: the close clock restarts at `first_probe`
    assert s.wait == 4 and s.zero_run == 0
    far = ProbeSchedule(first_probe=4, probe_every=16)
    for _ in range(16):
        far.plain_step()
        assert not far.due(close=False)
    far.plain_step()
    assert far.due(close=False)


def test_the_far_clock_is_carried_across_calls_and_the_close_one_is_not():
    first = ProbeSchedule(first_probe=4, probe_every=16)
    for _ in range(10):
        first.plain_step()
    second = ProbeSchedule(first_probe=4, probe_every=16)
    second.carry(first)
    assert second.carried_plain_steps == 10 and second.wait == 4
    for _ in range(6):
        assert not second.due(close=False)
        second.plain_step()
    second.plain_step()
    assert second.due(close=False)  # 7 here + 10 carried > 16
    assert second.hold_limit(due=False, far=True) == 6 and second.hold_limit(due=False, far=False) == 4
    assert second.hold_limit(due=True, far=True) == math.inf


def test_probes_fit_a_share_of_the_timed_run_and_a_deferred_one_waits_for_room():
    s = ProbeSchedule(probe_budget=0.02, untrusted_probe_budget=0.1, trusted_rounds=3)
    assert s.thin(2) and not s.thin(3)
    s.timed(100.0)
    assert s.affordable(1.5, thin=False) and s.loss_s == 1.5
    assert not s.affordable(1.0, thin=False)  # 2.5 > 2 % of 100 s
    assert s.deferred == 1 and s.waiting(thin=False) and not s.waiting(thin=True)
    assert s.affordable(1.0, thin=True)  # the larger budget while few rounds are timed
    s.timed(25.0)  # 125 s: the deferred probe's 2.5 s fit
    assert not s.waiting(thin=False)
    assert not s.affordable(5.0, thin=False, commit=False) and s.deferred == 1  # a price check counts nothing
    s.timed(10.0)
    s.affordable(100.0, thin=False)
    s.acceptance_changed()  # a probe's cost moved: priced again at once
    assert not s.waiting(thin=False)
    assert s.close(0.9, 1.0, thin=False) and not s.close(0.89, 1.0, thin=False) and s.close(0.1, 1.0, thin=True)
    assert s.far(0.85, 1.0, thin=False) and not s.far(0.86, 1.0, thin=False) and not s.far(0.1, 1.0, thin=True)


@pytest.mark.parametrize("kwargs", [dict(first_probe=0), dict(first_probe=8, probe_every=4), dict(probe_gain=1.5),
                                    dict(probe_budget=math.nan), dict(untrusted_probe_budget=-1.0),
                                    dict(carry_budget=2), dict(carry_budget="yes"), dict(bank_unfit=0.5)])
def test_bad_schedules_are_one_line_errors(kwargs):
    with pytest.raises(MoesdError):
        ProbeSchedule(**kwargs)


def test_a_probe_dearer_than_one_short_calls_budget_fits_after_a_few_calls_and_the_bank_stays_capped():
    """`carry_budget`: each call times 1 s, 20 ms of budget. A 50 ms probe never fits one call; the unspent budget
    carried across calls lets it run in the third, and calls without a deferred probe bank at most one call's budget
    (off by default: only the earlier call's plain steps carry)."""
    earlier, ran, calls = None, [], []
    for _ in range(4):
        s = ProbeSchedule(probe_budget=0.02, carry_budget=True)
        if earlier is not None:
            s.carry(earlier)
        for _ in range(10):
            s.timed(0.1)
            if not s.waiting(thin=False) and s.affordable(0.05, thin=False):
                s.probed()
                break
        ran.append(s.loss_s > 0)
        calls.append(s)
        earlier = s
    assert ran == [False, False, True, False]
    assert [c.banked_s for c in calls[:3]] == pytest.approx([0.0, 0.02, 0.04])
    assert 0.5 <= calls[2].elapsed_s <= 0.6 + 1e-9  # it fit once 2 % of 0.5 s was added to the 40 ms banked
    assert calls[3].banked_s == pytest.approx(0.02 * calls[2].elapsed_s + 0.04 - 0.05) and calls[3].wanted_s == 0.05
    idle = ProbeSchedule(probe_budget=0.02, carry_budget=True)
    for _ in range(5):  # calls whose probes never fall due
        nxt = ProbeSchedule(probe_budget=0.02, carry_budget=True)
        nxt.carry(idle)
        nxt.timed(1.0)
        idle = nxt
    assert idle.banked_s == pytest.approx(0.02)  # one call's budget, not five
    alone = ProbeSchedule(probe_budget=0.02)  # the default: each call's own budget
    alone.carry(idle)
    assert alone.banked_s == 0.0 and alone.wanted_s == 0.0


def test_by_default_only_a_probe_no_call_can_fit_is_saved_up_for():
    """Each call times 1 s (20 ms of budget). A 30 ms probe never fits one call: what the calls leave unspent carries
    until it runs, in the second call, and no further once it has run. A 15 ms probe deferred early in a call fits
    later in it, and such calls bank nothing (banking for every call, `carry_budget`, let probes burst); nor do calls
    whose probe only the draft's prefill makes too dear."""
    def calls(loss_s, n=4):
        earlier, out = None, []
        for _ in range(n):
            s = ProbeSchedule(probe_budget=0.02)
            if earlier is not None:
                s.carry(earlier)
            ran = False
            for _ in range(10):
                s.timed(0.1)
                if not ran and not s.waiting(thin=False) and s.affordable(loss_s, thin=False):
                    s.probed()
                    ran = True
            out.append((ran, s.banked_s))
            earlier = s
        return out

    assert calls(0.03) == [(False, 0.0), (True, pytest.approx(0.02)), (False, 0.0), (True, pytest.approx(0.02))]
    assert calls(0.015) == [(True, 0.0)] * 4
    assert [ran for ran, _ in calls(0.05)] == [False, False, True, False]
    drafts_prefill = ProbeSchedule(probe_budget=0.02)  # 30 ms, of which 25 the draft's prefill: nothing saved up
    earlier = ProbeSchedule(probe_budget=0.02)
    earlier.timed(1.0)
    assert not earlier.affordable(0.03, thin=False, start_s=0.025)
    drafts_prefill.carry(earlier)
    assert drafts_prefill.banked_s == 0.0
    off = ProbeSchedule(probe_budget=0.02, bank_unfit=False)
    earlier = ProbeSchedule(probe_budget=0.02)
    earlier.timed(1.0)
    assert not earlier.affordable(0.03, thin=False)
    off.carry(earlier)
    assert off.banked_s == 0.0
