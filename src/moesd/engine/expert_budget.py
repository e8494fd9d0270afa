"""MoE-Spec verification-time expert budgets (arXiv 2602.16052; docs/notes/moe-spec.md).

In a verify forward, each MoE layer may load at most C experts (per batch, or per sequence). The
shortlist is the C experts with the largest routing mass: each expert's full-softmax probability
summed over the verify tokens (or a fixed order from calibration counts: "static"). Then either
  substitution (default): every token re-picks its top-K inside the shortlist, with weights from the
      full softmax, renormalised over the K picks exactly when the model renormalises its own top-K
      (Mixtral always; Qwen2/3-MoE and OLMoE when `norm_topk_prob`), or
  truncation: every token keeps its natural top-K, and experts outside the shortlist contribute
      zero (their slots are pointed at a shortlisted expert with weight 0, so nothing else is loaded;
      a token none of whose experts survive gets a zero MoE output).
Budgeted SD is not lossless: the verifier is a different model.

Applied inside the experts module's forward pre-hook (see expert_hooks.py), using the router
logits captured by a forward hook on the model's own router module; no model code is forked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moesd.engine.options import BUDGET_MODES, BUDGET_SCOPES
from moesd.errors import MoesdError
from moesd.jsonl import read_json

MODES = BUDGET_MODES
SCOPES = BUDGET_SCOPES
RANKINGS = ("router", "static")


@dataclass(frozen=True)
class ExpertBudget:
    budget: int  # C: experts per MoE layer per verify forward (per sequence with scope "sequence")
    mode: str = "substitution"
    scope: str = "batch"
    ranking: str = "router"
    static_order: tuple[tuple[int, ...], ...] | None = None  # per layer: experts, most selected first

    def validate(self, num_experts: int, top_k: int, num_layers: int) -> None:
        if self.mode not in MODES or self.scope not in SCOPES or self.ranking not in RANKINGS:
            raise MoesdError(f"expert budget: mode one of {MODES}, scope one of {SCOPES}, ranking one of {RANKINGS}")
        if self.budget < 1:
            raise MoesdError(f"expert budget must be >= 1, got {self.budget}")
        if self.mode == "substitution" and self.budget < top_k:
            raise MoesdError(f"substitution needs a budget >= top-K ({top_k}) so every token can keep K experts; "
                             f"got {self.budget} (use truncation for smaller budgets)")
        if self.ranking == "static":
            if self.static_order is None or len(self.static_order) != num_layers:
                raise MoesdError(f"static ranking needs an expert order for each of the {num_layers} MoE layers "
                                 f"(from `moesd budget calibrate`)")
            for order in self.static_order:
                if sorted(order) != list(range(num_experts)):
                    raise MoesdError(f"a static expert order must be a permutation of 0..{num_experts - 1}")

    @property
    def label(self) -> str:
        return f"C={self.budget} {self.mode} {self.scope}" + (" static" if self.ranking == "static" else "")


def shortlist(budget: ExpertBudget, probs: torch.Tensor, valid: torch.Tensor, rows: int, layer: int) -> torch.Tensor:
    """Allowed experts [groups, E] (groups: 1 for batch scope, `rows` for sequence scope)."""
    num_experts = probs.shape[1]
    groups = 1 if budget.scope == "batch" else rows
    c = min(budget.budget, num_experts)
    allowed = torch.zeros(groups, num_experts, dtype=torch.bool, device=probs.device)
    if budget.ranking == "static":
        allowed[:, list(budget.static_order[layer][:c])] = True
        return allowed
    mass = (probs * valid[:, None]).reshape(groups, -1, num_experts).sum(dim=1)
    allowed.scatter_(1, mass.topk(c, dim=1).indices, True)
    return allowed


def apply_budget(budget: ExpertBudget, probs: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
                 valid: torch.Tensor, rows: int, layer: int, normalize: bool, reweight: bool):
    """New (top_k_index, top_k_weights) for the [T, K] routing of T = rows x S flattened tokens.

    probs [T, E]: the router's full softmax (or the uniform-routing scores); valid [T]: which tokens
    are real (padding adds no mass). reweight False keeps the given weights in rank order (uniform
    routing, whose weights are not the router's anyway).
    """
    num_tokens, k = top_k_index.shape
    allowed_groups = shortlist(budget, probs, valid, rows, layer)
    group_of = torch.zeros(num_tokens, dtype=torch.long, device=probs.device) if budget.scope == "batch" else \
        torch.arange(num_tokens, device=probs.device) // (num_tokens // rows)
    allowed = allowed_groups[group_of]  # [T, E]
    inside = allowed.gather(1, top_k_index)  # [T, K]
    if bool(inside.all()):
        return top_k_index, top_k_weights  # nothing to change: C >= E, or the shortlist covers every pick
    if budget.mode == "substitution":
        vals, index = probs.masked_fill(~allowed, -1.0).topk(k, dim=1)
        if not reweight:
            return index.to(top_k_index.dtype), top_k_weights
        if normalize:
            vals = vals / vals.sum(dim=1, keepdim=True)
        return index.to(top_k_index.dtype), vals.to(top_k_weights.dtype)
    # Truncation: a dropped slot points at the group's first shortlisted expert, with weight 0.
    fallback = allowed_groups.float().argmax(dim=1)[group_of]  # [T]
    index = torch.where(inside, top_k_index, fallback[:, None].to(top_k_index.dtype))
    return index, top_k_weights * inside.to(top_k_weights.dtype)


def read_static_order(path: str) -> tuple[tuple[int, ...], ...]:
    """The per-layer expert order (most selected first) stored by `moesd budget calibrate`."""
    raw = read_json(path, "`moesd budget calibrate` file")
    try:
        order = tuple(tuple(int(e) for e in layer) for layer in raw["static_order"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MoesdError(f"{path}: not a `moesd budget calibrate` file with a static_order ({exc})") from None
    if not order:
        raise MoesdError(f"{path}: static_order is empty")
    return order
