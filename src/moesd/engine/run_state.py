"""The state of one `SpecEngine.generate` call (engine/spec_engine.py): outputs, active rows and the queue of
prompts waiting for one (continuous batching), the target cache, the proposer, the expert hooks, statistics.
Each call owns one, so the engine itself holds no per-run state."""

from __future__ import annotations

import torch

from moesd.engine.expert_hooks import ExpertRecorder
from moesd.engine.loading import LoadedModel
from moesd.engine.metrics import AcceptanceStats, ExpertStats, StepRecord
from moesd.engine.static_kv import new_kv


class RunState:
    """The state of one `generate` call: outputs, the active rows, the target cache, the proposer, the
    expert hooks, statistics. Nothing here points back at the engine."""

    def __init__(self, target: LoadedModel, proposer, gamma: int, seed: int, prompts: list[list[int]],
                 max_new_tokens: int | list[int], eos_token_id: int | None, batch_size: int,
                 kv_cache: str = "static", graphs=None):
        n = len(prompts)
        self.batch_size = min(batch_size, n)
        self.proposer = proposer  # None for the autoregressive baseline
        self.recorder: ExpertRecorder | None = None
        self.device = target.device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        # One token limit per request (serving: requests ask for different lengths).
        self.limits = list(max_new_tokens) if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens] * n
        self.eos_token_id = eos_token_id
        self.outputs: list[list[int]] = [[] for _ in range(n)]
        self.reasons = ["length"] * n
        self.histories = [list(p) for p in prompts]  # prompt + output, per request (prompt lookup reads it)
        self.active = list(range(self.batch_size))  # request ids generating now, in batch-row order
        self.queue = list(range(self.batch_size, n))  # request ids waiting for a free row
        self.finished = 0  # requests that have ended (EOS or their token limit)
        self.last: torch.Tensor | None = None  # [active] the newest token, not yet in the target cache
        self.pending: tuple[list[list[int]], torch.Tensor] | None = None  # this step's tokens per row
        self.kv_cache = kv_cache
        self.graphs = graphs  # engine/cuda_graphs.GraphPlan: fixed shapes (captured on CUDA), or None
        self.kv = new_kv(kv_cache, target.model, self.device, graphs)
        if graphs is not None and proposer is not None and hasattr(proposer, "use_graphs"):
            proposer.use_graphs(graphs)
        self.acceptance = AcceptanceStats(gamma, n)
        self.experts = ExpertStats(target.num_experts, target.top_k) if target.is_moe else None
        self.steps: list[StepRecord] = []
        self.prefill_s = 0.0
        self.max_slots = 0
        self.proposer_started = False
        self.budget_kl: list[torch.Tensor] = []
        self.policy = None  # `--gamma auto`: the run's AdaptiveGamma

    def absorb(self, routing) -> None:
        if self.experts is not None and routing is not None:
            self.experts.absorb([routing])

    def append_first(self, rid: int, token: int) -> bool:
        """A newly admitted request's first token (from its own prefill); False if that already ends it."""
        self.histories[rid].append(token)
        self.outputs[rid].append(token)
        if self.eos_token_id is not None and token == self.eos_token_id:
            self.reasons[rid] = "eos"
        elif len(self.outputs[rid]) < self.limits[rid]:
            return True
        self.finished += 1
        return False

    def emit(self, new_tokens: list[list[int]], final: torch.Tensor) -> int:
        """Append each active row's new tokens, cutting at EOS or the limit; finished rows leave the
        batch (target cache, draft state, `last`). Returns the number of tokens kept."""
        before = self.active
        kept = 0
        still = []
        for rid, toks in zip(before, new_tokens):
            self.histories[rid].extend(toks)
            toks = toks[: self.limits[rid] - len(self.outputs[rid])]
            if self.eos_token_id is not None and self.eos_token_id in toks:
                toks = toks[: toks.index(self.eos_token_id) + 1]
                self.reasons[rid] = "eos"
            self.outputs[rid].extend(toks)
            kept += len(toks)
            if self.reasons[rid] != "eos" and len(self.outputs[rid]) < self.limits[rid]:
                still.append(rid)
            else:
                self.finished += 1
        self.active, self.last = still, final
        if still != before:
            slots = [before.index(r) for r in still]
            if slots:
                idx = torch.tensor(slots, device=self.device)
                self.kv.select_rows(idx)
                if self.proposer is not None and self.proposer_started:
                    self.proposer.select_rows(slots)
                self.last = final[idx]
            else:
                self.last = final[:0]
        return kept

    def flush(self) -> int:
        new_tokens, final = self.pending
        self.pending = None
        return self.emit(new_tokens, final)
