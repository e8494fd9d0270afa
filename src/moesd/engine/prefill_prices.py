"""What starting the draft and a prefill cost, as `--gamma auto`'s step-cost model (engine/step_cost_model.py) prices
them: the draft's prefill when a run that opened with a plain prefill first speculates, the draft forward that prefill
saves its first round, and what a round merged with the target's prefill adds to it. A part of `StepCostModel`,
which supplies the stage prices these use (`_features`, `_stage_all`, `_stages_base`, `_feature_matrices`,
`_with_catch_up_and_outside`, `_corrected`)."""

from __future__ import annotations

import statistics
from collections import deque

import numpy as np


class PrefillPrices:
    def _init_prefill_prices(self) -> None:
        """The prices' measurements, kept across an engine's calls as the rest of the step-cost model is."""
        # The draft's prefill (proposer.start): seconds per history token it read, the last few. A policy whose
        # draft has not started yet (engine: the run opened with a plain prefill) must pay it before its first
        # round, and prices it (AdaptiveGamma._rates).
        self._start_s_per_token: deque = deque(maxlen=9)
        # The target's prefill (plain, or merged with the first round): seconds per token of its forward, the last
        # few. Their mean per token bounds what a few more tokens per row add to a prefill (its fixed cost is in the
        # mean): the price of the drafts a merged first round verifies (`merged_extra_s`).
        self._prefill_s_per_token: deque = deque(maxlen=9)
        self._start_scores_next = False  # whether the draft's prefill scores its first draft token (`start_saves_s`)

    def observe_draft_start(self, tokens: int, seconds: float, scores_next: bool = False) -> None:
        """The draft's prefill read `tokens` in `seconds`; `scores_next`: its last logits give the next round's first
        draft token (a draft model's do), so that round drafts with one forward fewer (`start_saves_s`)."""
        if tokens > 0 and seconds > 0:
            self._start_s_per_token.append(seconds / tokens)
        self._start_scores_next = bool(scores_next)

    def start_saves_s(self, b: int) -> float:
        """What the round right after the draft's prefill saves at batch size b, where that prefill scores its first
        draft token: one draft forward. Priced against the prefill (`draft_start_s`), it leaves the price of every
        later round as it is. Without it, a probe that starts the draft mid-run (stdlib B = 4: draft 0.1 ms at gamma
        1, 4.4 ms in the rounds after it) was taken for a round whose draft ran fast, and the rounds after it were
        priced low."""
        if not self._start_scores_next:
            return 0.0
        one_forward_s = float(self._stage_all("draft", np.array([self._features(b, 1)["draft"]]))[0])
        return float(self._corrected(np.array([0.0, one_forward_s]), b)[1])

    def draft_start_s(self, tokens: int) -> float:
        """Predicted seconds of the draft's prefill over `tokens` history tokens (0 until one has been measured,
        or for a proposer with nothing to prefill)."""
        seen = self._start_s_per_token
        return statistics.median(seen) * tokens if seen else 0.0

    def observe_prefill(self, tokens: int, seconds: float) -> None:
        """One forward of the target over whole prompts: `tokens` (padding included) in `seconds`."""
        if tokens > 0 and seconds > 0:
            self._prefill_s_per_token.append(seconds / tokens)

    def merged_extra_s(self, b: int, top: int) -> np.ndarray | None:
        """[top + 1]: what a round of draft length 0..top merged with the target's prefill of b rows adds to a plain
        prefill (the draft's own prefill apart, `draft_start_s`): g more tokens per row in the target's forward,
        priced at a prefill's mean seconds per token, and the round's drafting, rejection and outside time. None
        until a prefill has been timed."""
        if not self._prefill_s_per_token:
            return None
        stages = self._stages_base(b, top) - self._stage_all("target", self._feature_matrices(b, top)["target"])
        stages = self._corrected(self._with_catch_up_and_outside(stages, b, 0), b)  # a round's outside time, index
        stages[0] = 0.0
        return stages + statistics.median(self._prefill_s_per_token) * b * np.arange(top + 1)

    def _prefill_scales(self) -> dict:
        """The prices' medians, for `StepCostModel.scales`."""
        out = {}
        if self._prefill_s_per_token:
            out["prefill_s_per_token"] = statistics.median(self._prefill_s_per_token)
        if self._start_s_per_token:
            out["draft_start_s_per_token"] = statistics.median(self._start_s_per_token)
        return out
