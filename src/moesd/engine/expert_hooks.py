"""Per-layer expert accounting through the experts modules' forward pre-hook, with routing policies applied first.

A pre-hook on every experts module (hf_compat.find_experts_modules) sees each token's routing without
forking model code. The hook asks the routing policies (engine/routing_policy.py: uniform, budget) for the
final decision, hands it to the module, and adds the decision into a per-forward [layers, experts] count
tensor on the model's device. Nothing in the hook waits for the device (no boolean indexing, no `.item()`):
padding tokens are counted in a spare column that is dropped, and the counts are read once, after the timed
forward, when the run absorbs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from moesd.engine import hf_compat
from moesd.engine.expert_budget import ExpertBudget
from moesd.engine.options import check_routing
from moesd.engine.routing_policy import BudgetRouting, ForwardContext, Routing, UniformRouting

find_experts_modules = hf_compat.find_experts_modules


@dataclass
class ForwardRouting:
    phase: str  # engine/phases.py
    valid: torch.Tensor  # [rows * tokens] which tokens of the forward are real
    counts: torch.Tensor  # [MoE layers, experts + 1] tokens routed to each expert; the last column is padding
    layers_seen: int = 0  # MoE layers the forward went through
    indices: list[torch.Tensor] = field(default_factory=list)  # per layer [valid tokens, K]: keep_indices only

    @property
    def num_tokens(self) -> int:
        """Valid (non-padding) tokens in the forward."""
        return int(self.valid.sum())

    def _counts(self) -> torch.Tensor:
        return self.counts[: self.layers_seen, :-1].cpu()

    def distinct_experts(self) -> list[int]:
        return (self._counts() > 0).sum(dim=1).tolist()

    def tokens_per_expert(self, num_experts: int) -> list[torch.Tensor]:
        return list(self._counts())


class ExpertRecorder:
    """Installs the hooks for one generation: routing policy ("model" or "uniform", plus an optional
    budget) and recording of the experts each MoE layer loads in each forward. `remove()` uninstalls."""

    def __init__(self, model, num_experts: int, top_k: int, routing: str = "model", seed: int = 0,
                 budget: ExpertBudget | None = None, keep_indices: bool = False):
        check_routing(routing)
        self.num_experts, self.top_k, self.routing = num_experts, top_k, routing
        self.modules = find_experts_modules(model)
        self.layer_of = {id(m): i for i, m in enumerate(self.modules)}
        self.device = next(model.parameters()).device
        self.keep_indices = keep_indices  # also keep each layer's [valid tokens, K] choices (tests, analysis)
        self.policies: list = [UniformRouting(num_experts, top_k, seed, self.device)] if routing == "uniform" else []
        self.budget_policy = None
        if budget is not None:
            budget.validate(num_experts, top_k, len(self.modules))
            self.budget_policy = BudgetRouting(budget, model, self.modules, base_is_model=routing == "model")
            self.policies.append(self.budget_policy)
        self.current: ForwardRouting | None = None
        self.ctx = ForwardContext("", None, 1)
        self.forwards: list[ForwardRouting] = []
        self._handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in self.modules]

    @property
    def is_moe(self) -> bool:
        return bool(self.modules)

    def begin(self, phase: str, valid: torch.Tensor) -> None:
        self.ctx = ForwardContext(phase, valid.reshape(-1), int(valid.shape[0]))
        counts = torch.zeros(len(self.modules), self.num_experts + 1, dtype=torch.long, device=self.device)
        self.current = ForwardRouting(phase, self.ctx.valid, counts)
        if self.budget_policy is not None:
            self.budget_policy.begin(phase)

    def end(self) -> ForwardRouting | None:
        done, self.current = self.current, None
        self.ctx = ForwardContext("", None, 1)  # a forward outside begin/end is neither recorded nor budgeted
        if self.budget_policy is not None:
            self.budget_policy.end()
        if done is not None:
            self.forwards.append(done)
        return done

    def _hook(self, module, args, kwargs):
        index, weights = hf_compat.experts_call_routing(args, kwargs)
        decision = Routing(index, weights)
        layer = self.layer_of[id(module)]
        for policy in self.policies:
            policy.apply(layer, decision, self.ctx)
        if decision.changed:
            args, kwargs = hf_compat.with_routing(args, kwargs, decision.index, decision.weights)
        if self.current is not None:
            self._count(layer, decision.index)
        return args, kwargs

    def _count(self, layer: int, index: torch.Tensor) -> None:
        valid = self.ctx.valid
        if valid is not None and valid.numel() == index.shape[0]:
            index = torch.where(valid[:, None].to(index.device), index, self.num_experts)  # padding: spare column
        flat = index.reshape(-1).long()
        self.current.counts[layer].scatter_add_(0, flat, torch.ones_like(flat))
        self.current.layers_seen = max(self.current.layers_seen, layer + 1)
        if self.keep_indices:
            self.current.indices.append(index[index[:, 0] < self.num_experts])

    def remove(self) -> None:
        handles = self._handles + (self.budget_policy.handles if self.budget_policy is not None else [])
        for h in handles:
            h.remove()
