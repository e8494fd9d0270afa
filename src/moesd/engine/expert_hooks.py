"""Per-layer expert accounting through the experts modules' forward pre-hook, with routing policies applied first.

A pre-hook on every experts module (hf_compat.find_experts_modules) sees each token's routing without
forking model code. The hook asks the routing policies (engine/routing_policy.py: uniform, budget) for the
final decision, hands it to the module, and keeps a reference to the index tensor; counting happens after
the timed forward, so recording costs nothing measurable.
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
    num_tokens: int  # valid (non-padding) tokens in the forward
    indices: list[torch.Tensor] = field(default_factory=list)  # per layer, [valid tokens, K]

    def distinct_experts(self) -> list[int]:
        return [int(torch.unique(ix).numel()) for ix in self.indices]

    def tokens_per_expert(self, num_experts: int) -> list[torch.Tensor]:
        return [torch.bincount(ix.reshape(-1), minlength=num_experts) for ix in self.indices]


class ExpertRecorder:
    """Installs the hooks for one generation: routing policy ("model" or "uniform", plus an optional
    budget) and recording of the experts each MoE layer loads in each forward. `remove()` uninstalls."""

    def __init__(self, model, num_experts: int, top_k: int, routing: str = "model", seed: int = 0,
                 budget: ExpertBudget | None = None):
        check_routing(routing)
        self.num_experts, self.top_k, self.routing = num_experts, top_k, routing
        self.modules = find_experts_modules(model)
        self.layer_of = {id(m): i for i, m in enumerate(self.modules)}
        self.policies: list = [UniformRouting(num_experts, top_k, seed)] if routing == "uniform" else []
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
        self.current = ForwardRouting(phase, int(self.ctx.valid.sum()))
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
            valid = self.ctx.valid
            ix = decision.index if valid is None or valid.numel() != decision.index.shape[0] else decision.index[valid]
            self.current.indices.append(ix)
        return args, kwargs

    def remove(self) -> None:
        handles = self._handles + (self.budget_policy.handles if self.budget_policy is not None else [])
        for h in handles:
            h.remove()
