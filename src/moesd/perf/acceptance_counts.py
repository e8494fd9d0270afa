"""Acceptance as counts: what the engine records, what bench records carry, what every rate derives from.

Counts add (two runs, two batches, two repeats); rates do not (averaging two acceptance rates weighted by
anything but their draft tokens is wrong). So, as vLLM's spec-decode metrics do, counts travel and the
glossary's rates (perf/acceptance.py) are derived at the edge, here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moesd.errors import MoesdError


@dataclass
class AcceptanceCounts:
    """vLLM's counters plus rejections (for alpha). A *draft* is one round of one request."""

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_rejections: int = 0  # rounds that stopped at a rejected draft token (alpha's denominator)
    accepted_per_position: list[int] = field(default_factory=list)  # drafts whose i-th token was accepted

    def record(self, num_accepted: list[int], gamma) -> None:
        """One round: each row drafted `gamma` tokens (or gamma[i]: ragged drafts) and had `num_accepted[i]`
        of them accepted. A row that drafted nothing is no draft (vLLM counts proposals only)."""
        gammas = list(gamma) if isinstance(gamma, (list, tuple)) else [gamma] * len(num_accepted)
        longest = max(gammas, default=0)
        if len(self.accepted_per_position) < longest:
            self.accepted_per_position += [0] * (longest - len(self.accepted_per_position))
        for a, g in zip(num_accepted, gammas):
            if g == 0:
                continue
            self.num_drafts += 1
            self.num_draft_tokens += g
            self.num_accepted_tokens += a
            self.num_rejections += int(a < g)
            for i in range(a):
                self.accepted_per_position[i] += 1

    def __add__(self, other: "AcceptanceCounts") -> "AcceptanceCounts":
        n = max(len(self.accepted_per_position), len(other.accepted_per_position))
        pad = lambda xs: list(xs) + [0] * (n - len(xs))  # noqa: E731
        return AcceptanceCounts(self.num_drafts + other.num_drafts, self.num_draft_tokens + other.num_draft_tokens,
                                self.num_accepted_tokens + other.num_accepted_tokens,
                                self.num_rejections + other.num_rejections,
                                [a + b for a, b in zip(pad(self.accepted_per_position), pad(other.accepted_per_position))])

    @staticmethod
    def total(parts) -> "AcceptanceCounts":
        out = AcceptanceCounts()
        for p in parts:
            out = out + p
        return out

    # --- the glossary's derived quantities -------------------------------------------------------
    @property
    def acceptance_rate(self) -> float:
        """vLLM's accepted / draft tokens."""
        return self.num_accepted_tokens / max(self.num_draft_tokens, 1)

    @property
    def alpha(self) -> float:
        """Per-token acceptance probability: accepted / (accepted + rejections)."""
        return self.num_accepted_tokens / max(self.num_accepted_tokens + self.num_rejections, 1)

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens per round counting the bonus token: 1 + accepted / drafts."""
        return 1.0 + self.num_accepted_tokens / max(self.num_drafts, 1)

    def sigma(self, gamma: int) -> float:
        """MoESD Eq. 5: mean acceptance length / (gamma + 1), at the configured gamma."""
        return self.mean_acceptance_length / (gamma + 1)

    @property
    def per_position_acceptance(self) -> list[float]:
        drafts = max(self.num_drafts, 1)
        return [a / drafts for a in self.accepted_per_position]

    # --- the one dict form (engine JSON, bench records) ------------------------------------------
    COUNT_KEYS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens", "num_rejections", "accepted_per_position")

    def to_dict(self, gamma: int) -> dict:
        """Counts and every derived quantity, under the names vLLM and the glossary use."""
        return {"num_drafts": self.num_drafts, "num_draft_tokens": self.num_draft_tokens,
                "num_accepted_tokens": self.num_accepted_tokens, "accepted_per_position": self.accepted_per_position,
                "per_position_acceptance": self.per_position_acceptance, "num_rejections": self.num_rejections,
                "acceptance_rate": self.acceptance_rate, "alpha": self.alpha,
                "mean_acceptance_length": self.mean_acceptance_length, "sigma": self.sigma(gamma)}

    @classmethod
    def from_dict(cls, d: dict) -> "AcceptanceCounts":
        try:
            counts = [int(d[k]) for k in cls.COUNT_KEYS[:4]]
            per_pos = [int(x) for x in d.get("accepted_per_position") or []]
        except (KeyError, TypeError, ValueError) as exc:
            raise MoesdError(f"acceptance counts malformed: {exc}") from None
        if min(counts + per_pos, default=0) < 0:
            raise MoesdError("acceptance counts must be >= 0")
        return cls(*counts, per_pos)
