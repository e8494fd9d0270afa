"""Per-layer expert accounting and routing control through the experts modules' forward pre-hook.

Every MoE family that uses transformers' `@use_experts_implementation` (Mixtral, Qwen2/3-MoE,
OLMoE, DeepSeek-V2/V3, gpt-oss, ...) calls its experts module as
``experts(hidden_states [T, H], top_k_index [T, K], top_k_weights [T, K])``. A pre-hook there sees
the routing decision of every token without forking model code, can replace it (uniform routing;
expert budgets later), and costs nothing measurable: it only keeps a reference to the index tensor,
which is counted after the timed forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from moesd.engine.expert_budget import ExpertBudget, apply_budget, find_routers, router_normalizes
from moesd.errors import MoesdError


def find_experts_modules(model) -> list[torch.nn.Module]:
    """Experts modules in layer order (those wrapped by transformers' experts interface)."""
    found = []
    for module in model.modules():
        cls = type(module)
        if hasattr(cls, "_apply_gate") and "Experts" in cls.__name__:
            found.append(module)
    return found


@dataclass
class ForwardRouting:
    phase: str  # "prefill" | "decode" | "verify" | "draft"
    num_tokens: int  # valid (non-padding) tokens in the forward
    indices: list[torch.Tensor] = field(default_factory=list)  # per layer, [valid tokens, K]

    def distinct_experts(self) -> list[int]:
        return [int(torch.unique(ix).numel()) for ix in self.indices]

    def tokens_per_expert(self, num_experts: int) -> list[torch.Tensor]:
        return [torch.bincount(ix.reshape(-1), minlength=num_experts) for ix in self.indices]


class ExpertRecorder:
    """Records the experts each MoE layer loads in each forward; optionally forces uniform routing.

    routing "model": the router's own choice. "uniform": every token picks K distinct experts
    uniformly at random (i.i.d. across tokens), so MoESD's Eq. 8 holds exactly. `budget`: an
    MoE-Spec expert budget applied to "verify" forwards only (never prefill, decode or draft).
    """

    def __init__(self, model, num_experts: int, top_k: int, routing: str = "model", seed: int = 0,
                 budget: ExpertBudget | None = None):
        if routing not in ("model", "uniform"):
            raise ValueError(f"routing must be 'model' or 'uniform', got {routing!r}")
        self.num_experts, self.top_k, self.routing = num_experts, top_k, routing
        self.modules = find_experts_modules(model)
        self.layer_of = {id(m): i for i, m in enumerate(self.modules)}
        self.generator = torch.Generator().manual_seed(seed)
        self.current: ForwardRouting | None = None
        self.valid: torch.Tensor | None = None  # [B*S] which flattened tokens are real
        self.rows = 1
        self.forwards: list[ForwardRouting] = []
        self.enabled = True
        self.budget = budget
        self._handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in self.modules]
        self._router_logits: dict[int, torch.Tensor] = {}
        self._normalize: list[bool] = [True] * len(self.modules)
        if budget is not None:
            budget.validate(num_experts, top_k, len(self.modules))
            if routing == "model":
                self._tap_routers(model)

    def _tap_routers(self, model) -> None:
        """Substitution needs every token's full softmax, which only the router module sees: a forward
        hook keeps its logits for the experts call that follows in the same layer."""
        routers = find_routers(model, self.modules)
        if any(r is None for r in routers):
            raise MoesdError("expert budgets with model routing need transformers' top-K router modules "
                             "(Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE); this model has none")
        for layer, router in enumerate(routers):
            self._normalize[layer] = router_normalizes(router)
            self._handles.append(router.register_forward_hook(self._router_hook(layer)))

    def _router_hook(self, layer: int):
        def hook(module, args, output):
            if self.budget is not None and self.current is not None and self.current.phase == "verify":
                self._router_logits[layer] = output[0]
        return hook

    @property
    def is_moe(self) -> bool:
        return bool(self.modules)

    def begin(self, phase: str, valid: torch.Tensor) -> None:
        self.rows = int(valid.shape[0])
        self.valid = valid.reshape(-1)
        self.current = ForwardRouting(phase, int(self.valid.sum()))

    def end(self) -> ForwardRouting | None:
        done, self.current = self.current, None
        self._router_logits.clear()
        if done is not None and self.enabled:
            self.forwards.append(done)
        return done

    def _hook(self, module, args, kwargs):
        hidden, top_k_index, top_k_weights = _split_args(args, kwargs)
        scores = None
        if self.routing == "uniform":
            scores = torch.rand(top_k_index.shape[0], self.num_experts, generator=self.generator)
            top_k_index = scores.topk(self.top_k, dim=-1).indices.to(top_k_index.device, top_k_index.dtype)
        if self.budget is not None and self.current is not None and self.current.phase == "verify":
            layer = self.layer_of[id(module)]
            if scores is not None:  # uniform routing: its random scores stand in for router probabilities
                probs, reweight = (scores / scores.sum(dim=1, keepdim=True)).to(top_k_index.device), False
            else:
                probs, reweight = torch.softmax(self._router_logits.pop(layer).float(), dim=-1), True
            valid = self.valid if self.valid is not None and self.valid.numel() == top_k_index.shape[0] \
                else torch.ones(top_k_index.shape[0], dtype=torch.bool, device=top_k_index.device)
            top_k_index, top_k_weights = apply_budget(self.budget, probs, top_k_index, top_k_weights, valid,
                                                      self.rows, layer, self._normalize[layer], reweight)
        if scores is not None or self.budget is not None:
            args, kwargs = _replace_routing(args, kwargs, top_k_index, top_k_weights)
        if self.current is not None and self.enabled:
            ix = top_k_index if self.valid is None or self.valid.numel() != top_k_index.shape[0] else top_k_index[self.valid]
            self.current.indices.append(ix)
        return args, kwargs

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _split_args(args, kwargs):
    names = ("hidden_states", "top_k_index", "top_k_weights")
    values = list(args) + [kwargs[n] for n in names[len(args):]]
    return values[0], values[1], values[2]


def _replace_routing(args, kwargs, top_k_index, top_k_weights):
    values = [args[0], top_k_index, top_k_weights]
    names = ("hidden_states", "top_k_index", "top_k_weights")
    args = tuple(values[: len(args)]) + tuple(args[3:])
    kwargs = dict(kwargs, **{n: v for n, v in zip(names[len(args):], values[len(args):])})
    return args, kwargs
