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
    uniformly at random (i.i.d. across tokens), so MoESD's Eq. 8 holds exactly.
    """

    def __init__(self, model, num_experts: int, top_k: int, routing: str = "model", seed: int = 0):
        if routing not in ("model", "uniform"):
            raise ValueError(f"routing must be 'model' or 'uniform', got {routing!r}")
        self.num_experts, self.top_k, self.routing = num_experts, top_k, routing
        self.modules = find_experts_modules(model)
        self.generator = torch.Generator().manual_seed(seed)
        self.current: ForwardRouting | None = None
        self.valid: torch.Tensor | None = None  # [B*S] which flattened tokens are real
        self.forwards: list[ForwardRouting] = []
        self.enabled = True
        self._handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in self.modules]

    @property
    def is_moe(self) -> bool:
        return bool(self.modules)

    def begin(self, phase: str, valid: torch.Tensor) -> None:
        self.valid = valid.reshape(-1)
        self.current = ForwardRouting(phase, int(self.valid.sum()))

    def end(self) -> ForwardRouting | None:
        done, self.current = self.current, None
        if done is not None and self.enabled:
            self.forwards.append(done)
        return done

    def _hook(self, module, args, kwargs):
        hidden, top_k_index, top_k_weights = _split_args(args, kwargs)
        if self.routing == "uniform":
            scores = torch.rand(top_k_index.shape[0], self.num_experts, generator=self.generator)
            top_k_index = scores.topk(self.top_k, dim=-1).indices.to(top_k_index.device, top_k_index.dtype)
            args, kwargs = _replace_index(args, kwargs, top_k_index)
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


def _replace_index(args, kwargs, top_k_index):
    if len(args) >= 2:
        args = (args[0], top_k_index, *args[2:])
    else:
        kwargs = dict(kwargs, top_k_index=top_k_index)
    return args, kwargs
