"""Who decides each token's experts: the model's router, uniform i.i.d. routing, and an MoE-Spec budget.

Policies transform a `Routing` decision inside the experts modules' pre-hook (engine/expert_hooks.py),
in order: the base policy (model or uniform) first, then an optional budget. Recording what was finally
used is the recorder's job, not theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moesd.engine import hf_compat, phases
from moesd.engine.expert_budget import ExpertBudget, apply_budget
from moesd.errors import MoesdError


@dataclass
class Routing:
    """One layer's routing for one forward, as the experts module will receive it."""

    index: torch.Tensor  # [T, K]
    weights: torch.Tensor  # [T, K]
    # A full distribution over experts [T, E] for a budget to rank by; None: take the router's softmax.
    probs: torch.Tensor | None = None
    changed: bool = False


@dataclass
class ForwardContext:
    phase: str
    valid: torch.Tensor | None  # [rows * tokens] which flattened tokens are real
    rows: int


class UniformRouting:
    """Every token picks K distinct experts uniformly at random, i.i.d. across tokens: Eq. 8 holds exactly."""

    def __init__(self, num_experts: int, top_k: int, seed: int, device: torch.device = torch.device("cpu")):
        self.num_experts, self.top_k = num_experts, top_k
        # On the model's device: a CPU generator would cost a host-to-device copy (and a sync) per layer.
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def apply(self, layer: int, r: Routing, ctx: ForwardContext) -> None:
        scores = torch.rand(r.index.shape[0], self.num_experts, generator=self.generator, device=self.device)
        r.index = scores.topk(self.top_k, dim=-1).indices.to(r.index.device, r.index.dtype)
        # Its random scores stand in for router probabilities if a budget ranks experts afterwards.
        r.probs = (scores / scores.sum(dim=1, keepdim=True)).to(r.index.device)
        r.changed = True


class BudgetRouting:
    """MoE-Spec: at most C experts per layer in verify forwards only (never prefill, decode or draft).

    With the model's own routing, ranking needs every token's full softmax, which only the router sees: a
    forward hook on each router keeps its logits for the experts call that follows in the same layer."""

    def __init__(self, budget: ExpertBudget, model, experts_modules, base_is_model: bool):
        self.budget = budget
        self.normalize = [True] * len(experts_modules)
        self._logits: dict[int, torch.Tensor] = {}
        self.phase: str | None = None
        self.handles = []
        if base_is_model:
            routers = hf_compat.find_routers(model, experts_modules)
            if any(r is None for r in routers):
                raise MoesdError("expert budgets with model routing need transformers' top-K router modules "
                                 "(Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE); this model has none")
            for layer, router in enumerate(routers):
                self.normalize[layer] = hf_compat.router_normalizes(router)
                self.handles.append(router.register_forward_hook(self._router_hook(layer)))

    def _router_hook(self, layer: int):
        def hook(module, args, output):
            if self.phase == phases.VERIFY:
                self._logits[layer] = hf_compat.router_logits(output)
        return hook

    def begin(self, phase: str) -> None:
        self.phase = phase

    def end(self) -> None:
        self.phase = None
        self._logits.clear()

    def apply(self, layer: int, r: Routing, ctx: ForwardContext) -> None:
        if ctx.phase != phases.VERIFY:
            return
        if r.probs is not None:
            probs, reweight = r.probs, False
        else:
            probs, reweight = torch.softmax(self._logits.pop(layer).float(), dim=-1), True
        n = r.index.shape[0]
        valid = ctx.valid if ctx.valid is not None and ctx.valid.numel() == n \
            else torch.ones(n, dtype=torch.bool, device=r.index.device)
        r.index, r.weights = apply_budget(self.budget, probs, r.index, r.weights, valid, ctx.rows, layer,
                                          self.normalize[layer], reweight)
        r.changed = True
