"""Per-step measurements: stage times, acceptance (vLLM's definitions), experts per forward.

Acceptance follows vllm/v1/spec_decode/metrics.py: a *draft* is one round for one request;
acceptance_rate = accepted / draft tokens; mean acceptance length = 1 + accepted / drafts (it counts
the bonus token); per-position acceptance = accepted at position i / drafts. sigma (MoESD Eq. 5) =
mean acceptance length / (gamma + 1). alpha is the paper's (Leviathan et al.'s) per-token acceptance
probability, estimated as accepted / (accepted + rejections): every draft token that was evaluated
was either accepted or was the one rejection that ended its round. Under i.i.d. acceptance
acceptance_rate = alpha (1 - alpha^gamma) / ((1 - alpha) gamma) < alpha.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, fields

import numpy as np
import torch

from moesd.engine import phases
from moesd.perf.acceptance_counts import AcceptanceCounts


class StageClock:
    """Wall time of a stage with the device synchronised: host timer on CPU (ops are synchronous
    there), CUDA events on GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def run(self, fn, *args, **kwargs):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args, **kwargs)
            end.record()
            end.synchronize()
            return out, start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        return out, time.perf_counter() - t0

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


@dataclass
class StepRecord:
    kind: str  # engine/phases.py: "decode" (one target token), "verify" (draft + verify), "prefill+verify" (first round)
    batch_size: int  # active sequences in this step
    gamma: int  # draft length this step (the configured one except on the last rounds)
    step_s: float  # whole step, bookkeeping included
    target_s: float  # the target forward: T_T(B, 1) for decode, T_T(B, gamma+1) for verify
    draft_s: float = 0.0  # the whole draft round (gamma tokens)
    draft_forward_s: float = 0.0  # of which model forwards
    reject_s: float = 0.0
    tokens: int = 0  # tokens appended to outputs this step


class AcceptanceStats:
    """The run's acceptance counts (perf/acceptance_counts.py) plus a per-request histogram."""

    def __init__(self, gamma: int, num_requests: int):
        self.gamma = gamma
        self.counts = AcceptanceCounts(accepted_per_position=[0] * gamma)
        self.histogram = [[0] * (gamma + 1) for _ in range(num_requests)]  # [request][accepted 0..gamma]

    def record(self, request_ids: list[int], num_accepted: list[int], gamma) -> None:
        self.counts.record(num_accepted, gamma)
        drafted = list(gamma) if isinstance(gamma, (list, tuple)) else [gamma] * len(num_accepted)
        for rid, a, g in zip(request_ids, num_accepted, drafted):
            if g:
                self.histogram[rid][a] += 1

    def summary(self) -> dict:
        return {**self.counts.to_dict(self.gamma), "acceptance_histogram": self.histogram}


@dataclass
class ExpertForward:
    phase: str
    num_tokens: int
    distinct_experts: list[int]  # per MoE layer
    max_tokens_per_expert: list[int]  # per MoE layer


class ExpertStats:
    """Turns the recorder's raw routing into per-forward counts, outside the timed region."""

    def __init__(self, num_experts: int, top_k: int):
        self.num_experts, self.top_k = num_experts, top_k
        self.forwards: list[ExpertForward] = []
        self.load: dict[str, np.ndarray] = {}  # phase -> tokens routed to each expert, summed over layers
        self.layer_load: dict[str, np.ndarray] = {}  # phase -> [layers, experts] tokens routed

    def absorb(self, routings) -> None:
        for r in routings:
            counts = r.tokens_per_expert(self.num_experts)
            self.forwards.append(ExpertForward(r.phase, r.num_tokens, r.distinct_experts(),
                                               [int(c.max()) if c.numel() else 0 for c in counts]))
            per_layer = torch.stack(counts).cpu().numpy() if counts else np.zeros((0, self.num_experts))
            self.load[r.phase] = self.load.get(r.phase, np.zeros(self.num_experts)) + per_layer.sum(axis=0)
            if r.phase in self.layer_load and self.layer_load[r.phase].shape == per_layer.shape:
                self.layer_load[r.phase] = self.layer_load[r.phase] + per_layer
            else:
                self.layer_load.setdefault(r.phase, per_layer.astype(float))

    def summary(self) -> dict:
        out: dict = {"num_experts": self.num_experts, "top_k": self.top_k, "phases": {},
                     # Every target forward: its phase, real tokens, and per MoE layer the distinct
                     # experts loaded and the largest number of tokens any one expert processed.
                     "forwards": _records_as_dicts(self.forwards)}
        for phase in sorted({f.phase for f in self.forwards}):
            fs = [f for f in self.forwards if f.phase == phase]
            distinct = np.array([np.mean(f.distinct_experts) for f in fs])
            tokens = np.array([f.num_tokens for f in fs])
            by_tokens = {}
            for t in sorted(set(tokens.tolist())):
                by_tokens[t] = float(np.mean(distinct[tokens == t]))
            out["phases"][phase] = {
                "forwards": len(fs),
                "mean_tokens": float(tokens.mean()),
                "mean_distinct_experts_per_layer": float(distinct.mean()),
                "per_layer_mean_distinct": np.mean([f.distinct_experts for f in fs], axis=0).tolist(),
                "mean_tokens_per_active_expert": float(np.mean(tokens * self.top_k / np.maximum(distinct, 1e-9))),
                "max_tokens_per_expert": int(max(max(f.max_tokens_per_expert) for f in fs)),
                "distinct_vs_tokens": [[t, d] for t, d in by_tokens.items()],
                "expert_load": self.load[phase].astype(int).tolist(),
                "expert_load_per_layer": self.layer_load[phase].astype(int).tolist(),
            }
        return out

    def distinct_at(self, phase: str, tokens: int) -> list[float]:
        """Mean distinct experts per layer of every forward of this phase with exactly `tokens` tokens."""
        return [float(np.mean(f.distinct_experts)) for f in self.forwards if f.phase == phase and f.num_tokens == tokens]

    def routing_curve(self) -> dict:
        """Distinct experts vs tokens over all target forwards, in `moesd predict --routing-curve` format."""
        pts: dict[int, list[float]] = {}
        for f in self.forwards:
            pts.setdefault(f.num_tokens, []).append(float(np.mean(f.distinct_experts)))
        return {"num_experts": self.num_experts, "top_k": self.top_k,
                "points": [[t, float(np.mean(v))] for t, v in sorted(pts.items())]}


def stage_summary(steps: list[StepRecord], gamma: int | None, prefill_s: float, generated_tokens: int) -> dict:
    """Medians per stage over the steps run at the full (initial) batch size and the configured
    gamma (the merged prefill+verify round and shortened last rounds excluded), plus totals.
    gamma None (`--gamma auto`): every verify and decode step at the full batch size, whatever its gamma.

    tokens_per_s counts every generated token over prefill plus steps, so autoregressive and
    speculative runs compare like for like (SD merges the target prefill into its first round)."""
    if not steps:  # every sequence ended in the prefill (one new token, or EOS first)
        return {"full_batch_size": None, "steps": 0, "steps_at_full_batch": 0, "total_s": 0.0, "forward_s": 0.0,
                "outside_forward_fraction": 0.0, "prefill_s": prefill_s, "generation_s": prefill_s,
                "tokens": generated_tokens, "tokens_per_s": generated_tokens / prefill_s if prefill_s > 0 else 0.0}
    full = max(s.batch_size for s in steps)
    at_full = [s for s in steps if s.batch_size == full and s.kind != phases.PREFILL_VERIFY
               and (s.kind == phases.DECODE or gamma is None or s.gamma == gamma)]

    def med(xs):
        xs = [x for x in xs if x > 0]
        return statistics.median(xs) if xs else 0.0

    spec = [s for s in at_full if s.kind == phases.VERIFY]
    decode = [s for s in at_full if s.kind == phases.DECODE and not gamma]
    forwards = sum(s.target_s + s.draft_forward_s for s in steps)
    total = sum(s.step_s for s in steps)
    out = {
        "full_batch_size": full,
        "steps": len(steps),
        "steps_at_full_batch": len(at_full),
        "total_s": total,
        "forward_s": forwards,
        "outside_forward_fraction": (total - forwards) / total if total > 0 else 0.0,
        "prefill_s": prefill_s,
        "generation_s": prefill_s + total,
        "tokens": generated_tokens,
        "tokens_per_s": generated_tokens / (prefill_s + total) if prefill_s + total > 0 else 0.0,
    }
    if decode:
        out["target_decode_s"] = med(s.target_s for s in decode)
    if spec:
        out["target_verify_s"] = med(s.target_s for s in spec)
        out["draft_round_s"] = med(s.draft_s for s in spec)
        out["draft_token_s"] = (out["draft_round_s"] / gamma if gamma else  # the paper's T_D(B, 1)
                                med(s.draft_s / s.gamma for s in spec if s.gamma))
        out["reject_s"] = med(s.reject_s for s in spec)
    return out


def steps_as_dicts(steps: list[StepRecord]) -> list[dict]:
    return _records_as_dicts(steps)


def _records_as_dicts(records: list) -> list[dict]:
    """Flat dataclass records (fields of numbers, strings or lists of numbers) as dicts, lists copied: what
    `dataclasses.asdict` returns for them, without its recursive deep copy (a one-off timeit over 40 records: 0.47-0.92
    ms with it, 0.02 without; the report is built outside the timed steps, but inside the caller's wall time)."""
    if not records:
        return []
    names = [f.name for f in fields(records[0])]
    return [{n: _copied(getattr(r, n)) for n in names} for r in records]


def _copied(value):
    return list(value) if isinstance(value, list) else value
