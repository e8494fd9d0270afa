"""When `--gamma auto` probes: the schedule and budget of the SD rounds it runs while its verdict is "decode".

A probe is one round, run while the policy decodes, so the acceptance estimates and the round's measured cost stay
current (the draft length is the policy's: AdaptiveGamma._probe_length). This module decides only when one falls
due and whether it is affordable:
- after a run of plain steps: `wait` of them where the verdict is close enough for the cost model's error to flip it
  (the best round predicted at >= `probe_gain` of decoding), doubling after each probe (4, 8, ... `probe_every`),
  back to `first_probe` once the policy speculates on its own; `probe_every` where the verdict is far, counted
  across the `generate` calls of one engine (`carry`);
- within a budget: what this run's probes are predicted to cost over decoding stays within `probe_budget` (2 %) of
  the time the run has timed, `untrusted_probe_budget` (10 %) while fewer than `trusted_rounds` rounds near the
  batch size are timed (a verdict resting on a few measurements is no verdict: such far ones are probed like close
  ones, within the larger budget); with `carry_budget` (off by default), plus what the engine's earlier runs left
  unspent (`carry`), up to one run's budget or the probe they could not afford; without it (`bank_unfit`, on by
  default), only where an earlier run deferred a probe dearer than its whole budget without the draft's prefill, up to
  that probe's cost.
"""

from __future__ import annotations

from moesd.engine.options import check_flag
from moesd.errors import MoesdError


class ProbeSchedule:
    """One run's probe clock and budget (a fresh one per `generate` call, its far-verdict clock carried)."""

    def __init__(self, first_probe: int = 4, probe_every: int = 64, probe_gain: float = 0.9,
                 probe_budget: float = 0.02, untrusted_probe_budget: float = 0.1, trusted_rounds: int = 4,
                 carry_budget: bool = False, bank_unfit: bool = True) -> None:
        if not 1 <= first_probe <= probe_every:
            raise MoesdError(f"probe intervals must satisfy 1 <= first {first_probe} <= longest {probe_every}")
        if not 0.0 <= probe_gain <= 1.0:
            raise MoesdError(f"the probing threshold must be in [0, 1], got {probe_gain}")
        for budget in (probe_budget, untrusted_probe_budget):
            if not budget >= 0.0:
                raise MoesdError(f"a probing budget must be >= 0, got {budget}")
        self.first_probe, self.probe_every, self.probe_gain = first_probe, probe_every, probe_gain
        self.probe_budget, self.untrusted_probe_budget = probe_budget, untrusted_probe_budget
        self.trusted_rounds = trusted_rounds
        # False: each run's probes see its own budget alone (`carry`)
        self.carry_budget = check_flag("carry_probe_budget", carry_budget)
        self.bank_unfit = check_flag("bank_unfit_probes", bank_unfit)  # a probe no run can fit is saved up for
        self.wait = first_probe  # plain steps before a close verdict is probed
        self.zero_run = 0  # plain steps since the last round
        self.plain_before = 0  # plain steps the engine's earlier runs decoded since its last round (`carry`)
        self.carried_plain_steps = 0  # what this run started from (reported)
        self.elapsed_s = 0.0  # the steps this run has timed
        self.loss_s = 0.0  # what its probes were predicted to cost over decoding
        self.banked_s = 0.0  # the budget the engine's earlier runs left unspent (`carry`)
        self.wanted_s = 0.0  # the dearest probe the budget deferred since the engine's last probe (`carry`)
        self.wanted_round_s = 0.0  # the same without the draft's prefill (`bank_unfit`)
        # Due probes the budget had no room for; per budget (thin or not), the run time the last one needs to fit.
        self.deferred, self._fits_at_s = 0, {}

    def thin(self, rounds_near: int) -> bool:
        """Whether the rounds timed near the batch size are too few for a verdict to rest on."""
        return rounds_near < self.trusted_rounds

    def close(self, best_round: float, decode: float, thin: bool) -> bool:
        """Whether a decode verdict (rates of the best round and of decoding) is near enough to probe after `wait`.
        Far verdicts are not probed every few steps: 0.8 let the CPU MoE at B = 16 probe twice on verdicts of
        0.82-0.84 from a cost model within 5 % of the rounds. A stdlib engine timed only at its warm-up's rounds opened
        nine B = 1 runs with a plain prefill (predicted 0.79-0.98x; gamma 6 runs 1.8x there): hence `thin`."""
        return best_round >= self.probe_gain * decode or thin

    def far(self, best_round: float, decode: float, thin: bool) -> bool:
        """Whether a decode verdict is far (5 % below the probing threshold), on rounds it trusts: its hold lasts until
        the far verdict's probe."""
        return not thin and best_round < 0.95 * self.probe_gain * decode

    def plain_step(self) -> None:
        self.zero_run += 1

    def due(self, close: bool) -> bool:
        return (self.zero_run > self.wait and close) or self.zero_run + self.plain_before > self.probe_every

    def waiting(self, thin: bool) -> bool:
        """A deferred probe is not priced again before the run's time lets the one it deferred fit (each pricing is an
        optimistic pass over every length; between rounds a probe's cost moves little, its catch-up grows)."""
        return self.elapsed_s < self._fits_at_s.get(thin, 0.0)

    def affordable(self, loss_s: float, thin: bool, commit: bool = True, start_s: float = 0.0) -> bool:
        """Whether a probe predicted to cost `loss_s` over decoding fits the budget (`commit`: count it, or its
        deferral). A probe insures against the cost model's error, and was a short run's largest cost (stdlib B = 4:
        0.88-0.92x autoregressive, decoding 29 of 31 steps); without the larger budget while `thin`, stdlib B = 64's
        cold call probed 4 times (0.93x AR)."""
        budget = self.untrusted_probe_budget if thin else self.probe_budget
        if self.loss_s + loss_s > budget * self.elapsed_s + self.banked_s:
            self.deferred += commit
            if commit:
                need_s = self.loss_s + loss_s - self.banked_s
                self._fits_at_s[thin] = need_s / budget if budget else float("inf")
                self.wanted_s = max(self.wanted_s, loss_s)
                self.wanted_round_s = max(self.wanted_round_s, loss_s - start_s)
            return False
        self.loss_s += loss_s * commit
        return True

    def hold_limit(self, due: bool, far: bool) -> float:
        """The plain-step count (`zero_run`) below which no probe can fall due inside a hold of a decode verdict: a
        deferred probe's (`due`) waits on the budget, which a hold does not change."""
        return float("inf") if due else self.probe_every - self.plain_before if far else self.wait

    def probed(self) -> None:
        self.zero_run = self.plain_before = 0
        self.wanted_s = self.wanted_round_s = 0.0
        self.wait = min(2 * self.wait, self.probe_every)

    def speculated(self) -> None:
        """The policy chose a round on its own: the close verdict's clock restarts."""
        self.zero_run, self.wait, self.plain_before, self.wanted_s = 0, self.first_probe, 0, 0.0
        self.wanted_round_s = 0.0

    def acceptance_changed(self) -> None:
        self._fits_at_s = {}  # a probe's cost moved with it

    def timed(self, step_s: float) -> None:
        self.elapsed_s += step_s

    def carry(self, earlier: "ProbeSchedule") -> None:
        """Count the plain steps since the engine's last round across runs, towards the far verdict's probe
        (`probe_every`): the verdict it would check is carried (the cost model, the acceptance prior), so its age is
        too. Counted per run, 32-token calls never reached 64: a CPU MoE engine at B = 4 decoded all of four calls on
        a verdict of 0.89x, 0.82-1.15x gamma 2 (`--alternate moe:4 --against 2`). `wait` restarts each run (new
        rows); carried, it stayed at 64 once doubled (CPU MoE mixed batch: 0.89x gamma 2; results section 15)."""
        self.plain_before = self.carried_plain_steps = earlier.plain_before + earlier.zero_run
        # With `carry_budget`, the budget's unspent part carries too, up to one run's budget or the probe it could not
        # afford (so calls without probes cannot bank a burst of them): a probe dearer than 2 % of one short call
        # otherwise never fits. A CPU MoE engine at B = 1 (32-token calls of ~1.5 s, gamma 1 ~1.06x decoding) decoded
        # every step of 163 calls in a row once its verdict had turned. Off by default: with it (f7c806c) the confirm
        # read stdlib B = 4 at 0.956x autoregressive decoding (0.943-0.967, 132 passes; bc76498's confirm: 0.995x),
        # and the CPU MoE B = 1 no better (0.973x gamma 1, undecided; docs/results.md section 15).
        left_s = max(0.0, self.probe_budget * earlier.elapsed_s + earlier.banked_s - earlier.loss_s)
        if self.carry_budget:
            self.wanted_s = earlier.wanted_s
            self.banked_s = min(left_s, max(self.probe_budget * earlier.elapsed_s, self.wanted_s))
        elif self.bank_unfit and earlier.wanted_round_s > self.probe_budget * earlier.elapsed_s:
            # The probe the earlier run deferred costs more than its whole budget: no run of its length can afford
            # it alone, and its verdict would stand unchecked for ever. Its unspent budget carries, up to that
            # probe's cost, until the probe runs (`probed` clears `wanted_s`). CPU MoE engines at B = 1 (1.5 s
            # calls, 30 ms of budget each) decoded 28 and 78 calls in a row, deferring the due probe 1-3 times a
            # call (`adaptive_gamma_diagnose.py --variant moe:1`, docs/results.md section 15). Runs whose deferred
            # probes fit their own budget bank nothing: banking for every run (f7c806c) let stdlib B = 4 and 16
            # probe in bursts (0.956x and 0.921x autoregressive decoding). Nor where only the draft's prefill
            # (`start_s`, paid by a probe after a plain prefill) makes the probe dearer than the budget: counted,
            # stdlib engines at B = 4 and 16, where SD loses, ran rounds in 98 of 144 and 25 of 70 passes (0.951x
            # and 0.917x autoregressive decoding in those; at 826c439 58 of 200 and 1 of 130).
            self.wanted_s, self.wanted_round_s = earlier.wanted_s, earlier.wanted_round_s
            self.banked_s = min(left_s, self.wanted_s)
