"""The step-time model `--gamma auto` (engine/adaptive_gamma.py) prices its choices with: Algorithm 1's stage
times (moesd.perf: the physical prior or `moesd fit` parameters) refined online by what the run measures."""

from __future__ import annotations

import statistics
from collections import deque

import numpy as np

from moesd.engine.online_map import OnlineMap
from moesd.engine.prefill_prices import PrefillPrices
from moesd.perf.step_time import StepContext, StepTimeParams, step_times


class StepCostModel(PrefillPrices):
    """Algorithm 1's stage times for this target (and draft), refined by what this run measures.

    A target forward of n tokens costs w0 + w1 * prior(n) + w2 * n (non-negative weights fitted to every decode
    and verify forward of the run): the prior's shape over token counts (the MoE's concave expert loading
    included) with this machine's level, a per-forward overhead and a per-token term where the machine is more
    compute-bound than the prior says (the CPU prior alone is ~3x off, docs/results.md section 13). A draft round
    of g forwards costs g (v0 + v1 * prior draft forward) + v2 * catch-up tokens; rejection a scale on its prior.
    Until a stage has been measured, the target's scale stands in for it."""

    def __init__(self, params: StepTimeParams, ctx: StepContext, num_experts: int, top_k: int,
                 window: int = 64, source: str = "prior", max_gamma: int = 16, local_residual: bool = True,
                 local_window: int = 9, local_min: int = 3, anchored_index: bool = False,
                 shared_correction: bool = False) -> None:
        self.params, self.ctx, self.max_gamma = params, ctx, max_gamma
        self.num_experts, self.top_k = num_experts, top_k
        self.maps = {"target": OnlineMap(window, 3), "draft": OnlineMap(window, 3),
                     "reject": OnlineMap(window, 1)}
        self.source = source
        # Seconds per step outside the three stages (acceptance bookkeeping, cache trims, the proposer's update,
        # the decision itself), per kind of step: a round does more of it than a decode step (stdlib B = 4: 3.5 %
        # of a round's time, 1.2 % of a decode step's), which is the size of the goal's 3 % margin. Medians of
        # the last few steps: a descheduled step must not move them.
        self._outside = {False: deque(maxlen=15), True: deque(maxlen=15)}
        self._outside_s = {False: 0.0, True: 0.0}
        # Prior predictions per (batch size, gamma) (engine/factory.py fills the table, ~ms, before any run).
        self._cache: dict[tuple[int, int], dict] = {}
        self._matrices: dict[tuple[int, int], dict] = {}  # (batch size, top gamma) -> feature rows per map
        # (batch size, top gamma) -> (the maps' versions, the stages' seconds without catch-up): between refits
        # the maps do not change, and the decision prices the same batch sizes step after step.
        self._stages: dict[tuple[int, int], tuple] = {}
        self._by_batch: dict[tuple[int, int], tuple] = {}  # the same for batch sizes 1..b (`steps_by_batch_s`)
        self._matrices_by_batch: dict[tuple[int, int], dict] = {}  # and their feature rows, stacked
        # What has been measured, per batch size: the longest round's draft length, and decode steps. One
        # engine keeps one model for all its `generate` calls (the machine does not change between them), and a
        # new call's policy trusts it only near batch sizes it has seen (`measured_near`).
        self.rounds_at: dict[int, int] = {}
        self.round_count_at: dict[int, int] = {}  # how many rounds were timed at each batch size
        self.decodes_at: set[int] = set()
        self._init_prefill_prices()
        # Measured over predicted whole steps (priced without this correction), as a speed index and per (kind of
        # step, batch size). The maps fit one shape over every batch size and both kinds, and it can be off at some:
        # a stdlib engine at B = 16 priced its tail's decode steps (B = 10) at 29 ms where they took 20-27, so
        # rounds, which shorten that tail, looked like gains of 8-19 % where they lost ~10 % (a one-off trace,
        # docs/results.md section 15). And this CPU's speed moves by 10-20 % between calls, while rounds are timed
        # rarely: priced from the slow calls they ran in beside decode steps from a fast one, a gamma 1 round at
        # B = 16 was priced at 1.32x a decode step where it took 1.6x (one-off trace of change 22's first form).
        # So each step's ratio is kept relative to the speed index then (the median of the last 9 ratios, all
        # kinds), and with `local_residual` a price is scaled by the index now x the median of the last
        # `local_window` relative ratios of its kind at its batch size (where `local_min` are in; the other kind's
        # where only it was measured there, none where neither was).
        # The pair wanders, though: the data pin only the product of the index and a correction, so while a policy
        # times one kind of step at a batch size the two wander together and carry the other kind's price along, and
        # the kind it does not choose keeps whatever price it wandered to (only one priced too low gets chosen and
        # corrected). `benchmarks/adaptive_gamma_drift.py` at 50879c8, a gamma 1 round over a decode step at the full
        # batch, measured against priced (docs/results.md section 15): stdlib B = 4 in calls that ran rounds 1.50x
        # against 1.27x (its decode step at 1.27x the measured), CPU MoE B = 1 1.51x against 1.20x, stdlib B = 16 in
        # calls that only decoded 1.59x against 2.42x. The maps alone read 1.46/1.47x, 1.47/1.46x and 1.68/1.72x, but
        # nothing corrects a fit that is off at a batch size: with them by default (cf8ed25) a stdlib engine at B = 1
        # decoded every step of 11 of its 12 table calls (0.536x gamma 6), its fit pricing a decode step at 72-418 ms
        # where it took 23-60 (`--trace stdlib:1`). So the correction stays on.
        self.local_residual, self.local_min = bool(local_residual), local_min
        self._recent: deque = deque(maxlen=9)
        self._speed = 1.0
        # Per (kind, batch size), the last `local_window` steps: their ratios to the fit of their time over the index
        # then, or with `anchored_index`, their seconds in units of the index and their features, the corrections
        # being their medians over the maps' price now, taken again whenever a map refits. Kept as ratios to the fit
        # of their time, a kind not timed since (rounds, while a policy decodes) kept a
        # correction of a fit that had moved: in the seeded stub of the anchored index below, with the index anchored
        # a round at B = 1 was still priced 1.31-1.71x a decode step where it took 1.51x, 1.37-1.69x taken again.
        self._local: dict[tuple[bool, int], deque] = {}
        self._local_window = local_window
        self._local_versions: tuple | None = None  # the maps' versions the corrections were taken at
        # Their medians, where `local_min` are in, by batch size - 1 and kind (round: column 1); NaN elsewhere.
        self._local_table = np.full((64, 2), np.nan)
        # The speed index is measured against the prior's step times, never against the maps' fit: the maps learn
        # in its units, so an index relative to their fit let each refit move the units of every observation after
        # it, and observations of a kind not timed since (rounds, while a policy decodes) drifted against the
        # others. A seeded stub of one batch size, rounds 1.51x a decode step and 12 % noise, six rounds then 800
        # decode steps at a constant speed (tests/test_adaptive_gamma.py): the priced relation wandered
        # 1.07-2.09x. A CPU MoE engine at B = 1 priced a gamma 1 round at 1.6-2.3x a decode step (measured: 1.52x)
        # and decoded 21 calls in a row (one-off, docs/results.md section 15). Each (kind of step, batch size)'s
        # ratio to the prior is taken relative to the index, and fixed once `local_window` are in (a shape that kept
        # moving with the index would let the two drift together); a pair without one of its own takes the nearest
        # batch size's, its kind's first.
        # Off by default (`anchored_index`): with it, the confirm of d7b3924 met the CPU MoE B = 1 where auto had
        # decoded whole calls, but left a stdlib engine at B = 1 decoding 191 calls in a row, its probes deferred by
        # the budget (0.546x gamma 6; docs/results.md section 15). Without it, the index and the corrections are
        # ratios to the fit of their time, as before d7b3924.
        self.anchored_index = bool(anchored_index)
        # With `shared_correction`, one correction per batch size for both kinds of step (kept as decode steps'):
        # it corrects the fit's level at a batch size and leaves the relation of a round to a decode step to the
        # maps, so the index and the correction wandering together move both prices alike (without
        # `anchored_index`, whose corrections are taken otherwise). `adaptive_gamma_drift.py` at 500ca97 on the AVX2
        # CPU priced decode steps at 1.00-1.06x the measured with it, but the default did as well there (1.00-1.04x;
        # its 1.21-1.27x was on the AVX512 CPU), and it leaves the maps' relation uncorrected where their shape is
        # off: at stdlib B = 4 it probed gamma 6 rounds (0.71x decoding there) in 24 of 100 passes. Side by side with
        # the default (`--variant ... shared_correction=0,1`, 40-100 passes at stdlib B = 1 and 4 and the CPU MoE
        # B = 1) it read within 1.2 % in every cell (docs/results.md section 15), so it is off by default.
        self.shared_correction = bool(shared_correction)
        self._anchor_seen: dict[tuple[bool, int], list] = {}
        self._anchors: dict[tuple[bool, int], float] = {}

    def predicted(self, b: int, g: int) -> dict:
        if (b, g) not in self._cache:
            # One vectorised evaluation for every batch size up to this one (at least 64) and every draft length:
            # batch sizes change as rows finish, and the decision runs every step.
            top = max(self.max_gamma, g)
            bs, gs = np.meshgrid(np.arange(1, max(b, 64) + 1), np.arange(1, top + 1), indexing="ij")
            t = step_times(self.params, self.ctx, bs.ravel(), gs.ravel(), self.num_experts, self.top_k)
            for i, (bi, gi) in enumerate(zip(bs.ravel().tolist(), gs.ravel().tolist())):
                self._cache[(bi, gi)] = {"decode": float(t["target_decode_s"][i]),
                                         "verify": float(t["target_verify_s"][i]),
                                         "draft": float(t["draft_s"][i]), "reject": float(t["reject_s"][i])}
                if gi == 1:
                    self._cache[(bi, 0)] = self._cache[(bi, 1)]
        return self._cache[(b, g)]

    def _features(self, b: int, g: int, catch_up: int = 0, fresh: bool = False) -> dict:
        p = self.predicted(b, g)
        tokens = b * (g + 1) if g else b
        # The draft's third feature: the tokens it must first read, b per plain step decoded since its last
        # round (`catch_up` steps), in its first forward of the round. A probe after a long run of plain steps
        # pays them all, and without this feature the map saw that cost as noise on g forwards.
        # `fresh`: the round right after the draft's prefill, which already scored its first draft token, so it
        # drafts with g - 1 forwards (`observe_draft_start`).
        forwards = g - 1 if fresh and g else g
        return {"target": (1.0, p["verify"] if g else p["decode"], float(tokens)),
                "draft": (float(forwards), forwards * p["draft"], float(b * catch_up)), "reject": (0.0, p["reject"])}

    def round_s(self, b: int, g: int, catch_up: int = 0) -> float:
        """Predicted seconds of one step: a decode step (g = 0) or a round of draft length g, whole, `catch_up`
        plain steps after the draft's last round (one entry of `steps_s`)."""
        return float(self.steps_s(b, g, catch_up)[g])

    def steps_s(self, b: int, top: int, catch_up: int = 0, local: bool = True) -> np.ndarray:
        """round_s(b, g, catch_up) for every g in 0..top at once: the decision prices them all every step, and one
        call per draft length (4-5 map evaluations each) was most of its ~0.6 ms per step. `local`: with the
        per-batch-size correction (where `local_residual` is on)."""
        out = self._with_catch_up_and_outside(self._stages_base(b, top).copy(), b, catch_up)
        return self._corrected(out, b) if local else out

    def steps_by_batch_s(self, b: int, top: int, catch_up: int = 0) -> np.ndarray:
        """[b, top + 1]: steps_s(k, top, catch_up) for every batch size k = 1..b (row k - 1): what the steps of a
        static batch cost as its rows finish."""
        versions = tuple(m.version for m in self.maps.values())
        cached = self._by_batch.get((b, top))
        if cached is None or cached[0] != versions:
            # Any map's refit (a new feature row, or every `refit_every` observations) invalidates it, on about half
            # the steps of a moe:64 call: one product over the stacked features of all b batch sizes, where one per
            # batch size was half the decision's arithmetic there (cProfile, docs/results.md section 15).
            feats = self._matrices_by_batch.get((b, top))
            if feats is None:
                per_batch = [self._feature_matrices(k, top) for k in range(1, b + 1)]
                feats = self._matrices_by_batch[(b, top)] = {name: np.concatenate([f[name] for f in per_batch])
                                                             for name in self.maps}
            cached = self._by_batch[(b, top)] = (versions, self._stages_from(feats, top).reshape(b, top + 1))
        out = self._with_catch_up_and_outside(cached[1].copy(), np.arange(1, b + 1)[:, None], catch_up)
        return self._corrected(out, b)

    def _corrected(self, out: np.ndarray, b: int) -> np.ndarray:
        """Step times over draft lengths (decode steps first) at batch size b, or [b, lengths] at batch sizes 1..b,
        times the speed index and their corrections, where `local_residual` is on and a step has been timed."""
        if self.local_residual and self._recent:
            if self.anchored_index:
                self._refresh_local()
            scale = self._local_scales(b) if out.ndim == 2 else \
                self._speed * np.array([self._correction(b, False), self._correction(b, True)])
            out[..., :1] *= scale[..., :1]
            out[..., 1:] *= scale[..., 1:]
        return out

    def _refresh_local(self) -> None:
        """Take every correction again over the maps' price now, where a map has refitted since."""
        versions = tuple(m.version for m in self.maps.values())
        if versions != self._local_versions:
            self._local_versions = versions
            self._take_local([key for key, seen in self._local.items() if len(seen) >= self.local_min])

    def _take_local(self, keys: list, last: bool = False) -> None:
        """The corrections of (kind, batch size) `keys`: the median of their steps' seconds (in index units) over the
        maps' price (`last`: their last fit, no pending refit run) and each kind's outside time, in one product per
        stage over all their steps."""
        if not keys:
            return
        steps = [(is_round, u, f) for is_round, b in keys for u, f in self._local[(is_round, b)]]
        price = self._stage_all("target", np.array([f["target"] for _, _, f in steps]), last)
        is_round = np.array([r for r, _, _ in steps])
        if is_round.any():
            rest = sum(self._stage_all(name, np.array([f[name] for _, _, f in steps]), last) for name in ("draft",
                                                                                                        "reject"))
            price = price + np.where(is_round, rest, 0.0)
        price = price + np.where(is_round, self._outside_s[True], self._outside_s[False])
        ratios = (np.array([u for _, u, _ in steps]) / price).tolist()
        start = 0
        for kind, b in keys:
            n = len(self._local[(kind, b)])
            self._set_local(b, kind, statistics.median(ratios[start:start + n]))
            start += n

    def _correction(self, b: int, is_round: bool) -> float:
        """One entry of `_local_scales` without the speed index: what `_observe_against_fit` divides a ratio by."""
        row = self._local_table[b - 1] if b <= self._local_table.shape[0] else (np.nan, np.nan)
        own, other = float(row[int(is_round)]), float(row[int(not is_round)])
        return own if own == own else other if other == other else 1.0  # NaN != NaN: not measured

    def _local_scales(self, b: int) -> np.ndarray:
        """[b, 2]: the correction of a decode step (column 0) and of a round (column 1) at batch sizes 1..b."""
        table = self._local_table[:b]
        if table.shape[0] < b:
            table = np.vstack([table, np.full((b - table.shape[0], 2), np.nan)])
        # A kind not measured at a batch size takes the other kind's ratio there; neither: the speed index alone.
        scale = np.where(np.isnan(table), table[:, ::-1], table)
        return self._speed * np.where(np.isnan(scale), 1.0, scale)

    def _with_catch_up_and_outside(self, out: np.ndarray, b, catch_up: int) -> np.ndarray:
        """Add to cached stage times (draft lengths on the last axis, batch sizes `b` broadcast against the rest)
        what changes between refits: the draft's catch-up, linear in its third weight (b x catch_up tokens), and
        each kind of step's time outside the stages."""
        draft = self.maps["draft"]
        if catch_up and draft:
            out[..., 1:] += draft.weights()[2] * b * catch_up
        out[..., 0] += self._outside_s[False]
        out[..., 1:] += self._outside_s[True]
        return out

    def _stages_base(self, b: int, top: int) -> np.ndarray:
        """The three stages' seconds per draft length 0..top at batch size b, without catch-up or outside time."""
        versions = tuple(m.version for m in self.maps.values())
        cached = self._stages.get((b, top))
        if cached is None or cached[0] != versions:
            cached = self._stages[(b, top)] = (versions, self._stages_from(self._feature_matrices(b, top), top))
        return cached[1]

    def _feature_matrices(self, b: int, top: int) -> dict:
        """Each map's feature rows for draft lengths 0..top at batch size b (fixed: the prior does not change)."""
        feats = self._matrices.get((b, top))
        if feats is None:
            rows = [self._features(b, g) for g in range(top + 1)]
            feats = self._matrices[(b, top)] = {k: np.array([r[k] for r in rows]) for k in self.maps}
        return feats

    def _stages_from(self, feats: dict, top: int) -> np.ndarray:
        """The stages' seconds for feature rows of draft lengths 0..top (repeated per batch size when stacked): the
        target's forward, plus draft and rejection in every row but the decode steps'."""
        rest = self._stage_all("draft", feats["draft"]) + self._stage_all("reject", feats["reject"])
        rest[::top + 1] = 0.0
        return self._stage_all("target", feats["target"]) + rest

    def _stage_all(self, name: str, x: np.ndarray, last: bool = False) -> np.ndarray:
        """One stage's seconds for feature rows `x`; `last`: with the maps' last fit, no pending refit run."""
        def weights(m):
            return m.last_weights() if last else m.weights()

        m = self.maps[name]
        if m:
            return x @ weights(m)
        target = self.maps["target"]
        return (weights(target)[1] if target else 1.0) * x[:, 1]

    def observe(self, b: int, g: int, target_s: float, draft_s: float, reject_s: float,
                step_s: float | None = None, catch_up: int = 0, fresh: bool = False) -> None:
        """One measured step: its stages and, with `step_s`, the whole step (the rest is its outside time);
        `catch_up`: for a round, the plain steps decoded since the draft's last one; `fresh`: a round right after
        a draft's prefill that scored its first draft token (one forward fewer)."""
        f = self._features(b, g, catch_up, fresh)
        # With `local_residual`, what the maps learn is in units of the speed index at the time (the shape of the
        # step times over batch sizes and draft lengths, not this CPU's speed of the moment, which `steps_s`
        # multiplies back in): the round map otherwise keeps the speed of the calls that last ran rounds.
        index = self._observe_local(b, g, f, step_s) if step_s is not None and step_s > 0 else self._speed
        unit = index if self.local_residual else 1.0
        target_s, draft_s, reject_s = target_s / unit, draft_s / unit, reject_s / unit
        if g:
            self.rounds_at[b] = max(self.rounds_at.get(b, 0), g)
            self.round_count_at[b] = self.round_count_at.get(b, 0) + 1
        else:
            self.decodes_at.add(b)
        self.maps["target"].add(f["target"], target_s, group=g > 0)
        if g:
            self.maps["draft"].add(f["draft"], draft_s)
            self.maps["reject"].add(f["reject"], reject_s)
        if step_s is not None:
            seen = self._outside[g > 0]
            seen.append(max(0.0, step_s / unit - target_s - draft_s - reject_s))
            self._outside_s[g > 0] = statistics.median(seen)  # pure Python: np.median cost ~0.1 ms a step

    def _observe_local(self, b: int, g: int, f: dict, step_s: float) -> float:
        """One whole step, with `anchored_index` (`_observe_against_fit` without): measured over the prior's price,
        over its (kind, batch size) anchor, into the speed index; in units of the index before it (returned), into its
        (kind, batch size) correction, taken at once over the maps' last fit (what the decision before it priced
        with; a refit that is due waits for the next decision, which runs it anyway)."""
        stages = ("target", "draft", "reject") if g else ("target",)
        if not self.anchored_index:
            return self._observe_against_fit(b, g, f, step_s, stages)
        prior_ratio = float(step_s / sum(f[name][1] for name in stages))
        recent = self._recent
        index = statistics.median(recent) if recent else prior_ratio / self._anchor(b, g > 0)
        seen = self._local.setdefault((g > 0, b), deque(maxlen=self._local_window))
        seen.append((step_s / index, f))
        if len(seen) >= self.local_min:
            self._take_local([(g > 0, b)], last=True)
        anchor = self._anchor_seen.get((g > 0, b))
        if anchor is None and (g > 0, b) not in self._anchors:
            anchor = self._anchor_seen[(g > 0, b)] = []
        if anchor is not None:
            anchor.append(prior_ratio / index)
            if len(anchor) >= self.local_min:
                self._anchors[(g > 0, b)] = statistics.median(anchor)
            if len(anchor) >= self._local_window:
                del self._anchor_seen[(g > 0, b)]  # fixed from now on
        # The index takes each ratio over its pair's anchor: what is left is the machine's speed, not the prior's
        # error at the batch size the run is at.
        recent.append(prior_ratio / self._anchor(b, g > 0))
        self._speed = statistics.median(recent)
        return index

    def _observe_against_fit(self, b: int, g: int, f: dict, step_s: float, stages: tuple) -> float:
        """`_observe_local` without `anchored_index`: measured over the maps' last fit, into the speed index (over
        its (kind, batch size) correction) and, relative to the index before it (returned), into that correction."""
        predicted = sum(float(self._stage_all(name, np.array([f[name]]), last=True)[0]) for name in stages)
        ratio = float(step_s / (predicted + self._outside_s[g > 0]))
        recent = self._recent
        index = statistics.median(recent) if recent else ratio
        kind = g > 0 and not self.shared_correction
        seen = self._local.setdefault((kind, b), deque(maxlen=self._local_window))
        seen.append(ratio / index)
        if len(seen) >= self.local_min:
            self._set_local(b, kind, statistics.median(seen))
        # The index takes each ratio over its (kind, batch size) correction: what is left is the machine's speed, not
        # the fit's error at the batch size the run is at (taken as speed, a call's tail at B <= 10 set the index for
        # B = 16 too, and the per-batch-size corrections cancelled).
        recent.append(ratio / self._correction(b, kind))
        self._speed = statistics.median(recent)
        return index

    def _set_local(self, b: int, is_round: bool, ratio: float) -> None:
        if b > self._local_table.shape[0]:
            grown = np.full((max(b, 2 * self._local_table.shape[0]), 2), np.nan)
            grown[:self._local_table.shape[0]] = self._local_table
            self._local_table = grown
        self._local_table[b - 1, int(is_round)] = ratio

    def _anchor(self, b: int, is_round: bool) -> float:
        """The prior's error at a (kind of step, batch size) relative to the speed index (`_observe_local`)."""
        own = self._anchors.get((is_round, b))
        if own is not None:
            return own
        nearest = min(self._anchors.items(), key=lambda kv: (kv[0][0] != is_round, abs(kv[0][1] - b)), default=None)
        return nearest[1] if nearest is not None else 1.0

    def measured_near(self, b: int) -> tuple[int, bool]:
        """(the longest draft length of a round measured, whether a decode step was measured) at batch sizes within
        a factor of 2 of `b`: what a new run at batch size `b` may take as known (further away, the cost maps
        extrapolate over batch sizes with the prior's shape, which can be far off)."""
        longest = max((g for b2, g in self.rounds_at.items() if b / 2 <= b2 <= 2 * b), default=0)
        return longest, any(b / 2 <= b2 <= 2 * b for b2 in self.decodes_at)

    def rounds_near(self, b: int) -> int:
        """How many rounds were timed at batch sizes within a factor of 2 of `b` (this run's and earlier ones')."""
        return sum(n for b2, n in self.round_count_at.items() if b / 2 <= b2 <= 2 * b)

    def scales(self) -> dict:
        """The fitted weights of each map (target: per forward s, x prior, per token s; draft: per forward s,
        x prior, per catch-up token s; reject: x prior) and the seconds per step outside them (decode step, round),
        with `local_residual` in units of the speed index (reported with the per-batch-size corrections)."""
        out = {name: [float(w) for w in m.weights()] for name, m in self.maps.items() if m}
        out["outside_s"] = {"decode": self._outside_s[False], "round": self._outside_s[True]}
        if self._recent:
            if self.anchored_index:
                self._refresh_local()
            out["speed_index"] = self._speed
            out["local_ratio"] = {kind: {b + 1: float(r) for b, r in enumerate(self._local_table[:, column])
                                         if not np.isnan(r)} for column, kind in enumerate(("decode", "round"))}
        out.update(self._prefill_scales())
        return out
