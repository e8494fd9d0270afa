"""Token selection and speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023).

Names follow vLLM's rejection sampler: `target_probs`, `draft_probs`, `draft_token_ids`; per row the
output is the accepted draft tokens followed by one *recovered* token (resampled at the first
rejection) or, when every draft is accepted, the *bonus* token from the target's last position.
Rows are padded to gamma + 1 with PLACEHOLDER_TOKEN_ID.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PLACEHOLDER_TOKEN_ID = -1


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def probs_from_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Softmax at the temperature, restricted to the top-p nucleus; float32 [..., V]."""
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= params.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of probs [..., V]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def select_tokens(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    if params.greedy:
        return logits.argmax(dim=-1)
    return sample(probs_from_logits(logits, params), generator)


def _assemble(draft_token_ids: torch.Tensor, num_accepted: torch.Tensor, final_token: torch.Tensor) -> torch.Tensor:
    """[B, gamma+1]: accepted drafts, then the recovered/bonus token, then placeholders."""
    b, gamma = draft_token_ids.shape
    out = torch.full((b, gamma + 1), PLACEHOLDER_TOKEN_ID, dtype=torch.long, device=draft_token_ids.device)
    pos = torch.arange(gamma + 1, device=draft_token_ids.device)[None, :]
    out[:, :gamma] = torch.where(pos[:, :gamma] < num_accepted[:, None], draft_token_ids, PLACEHOLDER_TOKEN_ID)
    out.scatter_(1, num_accepted[:, None], final_token[:, None])
    return out


def leading_true(accept: torch.Tensor) -> torch.Tensor:
    """Number of leading True per row: [[T, T, F, T]] -> [2]."""
    return torch.cumprod(accept.long(), dim=1).sum(dim=1)


def greedy_verify(target_logits: torch.Tensor, draft_token_ids: torch.Tensor, skip: torch.Tensor | None = None):
    """Greedy SD: accept drafts while they equal the target's argmax; returns (num_accepted [B], tokens [B, g+1]).

    `skip` [B, gamma] marks leading columns that are not drafts (ragged rows, right-aligned): they pass
    unchecked and count in num_accepted, so the caller subtracts them."""
    target_argmax = target_logits.argmax(dim=-1)  # [B, gamma+1]
    match = draft_token_ids == target_argmax[:, :-1]
    num_accepted = leading_true(match if skip is None else match | skip)
    final = torch.gather(target_argmax, 1, num_accepted[:, None])[:, 0]
    return num_accepted, _assemble(draft_token_ids, num_accepted, final)


def rejection_sample(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_token_ids: torch.Tensor,
                     generator: torch.Generator | None, skip: torch.Tensor | None = None):
    """Standard speculative sampling; the output distribution equals the target's.

    target_probs [B, gamma+1, V], draft_probs [B, gamma, V], draft_token_ids [B, gamma].
    Accept draft token x with probability min(1, p(x)/q(x)); at the first rejection sample from
    norm(max(0, p - q)); if all gamma are accepted, sample the bonus token from p at position gamma.
    """
    b, gamma = draft_token_ids.shape
    assert target_probs.shape[:2] == (b, gamma + 1) and draft_probs.shape[:2] == (b, gamma)
    p = torch.gather(target_probs[:, :gamma], 2, draft_token_ids[..., None])[..., 0]
    q = torch.gather(draft_probs, 2, draft_token_ids[..., None])[..., 0]
    u = torch.rand(b, gamma, generator=generator, device=target_probs.device)
    # u < p/q without dividing by q = 0 (a draft never proposes a token it gives zero probability).
    accept = u * q < p
    if skip is not None:  # leading columns that are not drafts (ragged rows): passed unchecked, as in greedy_verify
        accept = accept | skip
    num_accepted = leading_true(accept)
    rows = torch.arange(b, device=target_probs.device)
    at = num_accepted.clamp(max=gamma - 1) if gamma > 0 else num_accepted
    residual = (target_probs[rows, at] - draft_probs[rows, at]).clamp(min=0.0)
    mass = residual.sum(dim=-1, keepdim=True)
    # p == q leaves no residual, but then nothing can be rejected; fall back to p for safety.
    residual = torch.where(mass > 0, residual / mass.clamp(min=1e-30), target_probs[rows, at])
    recovered = sample(residual, generator)
    bonus = sample(target_probs[:, gamma], generator)
    final = torch.where(num_accepted == gamma, bonus, recovered)
    return num_accepted, _assemble(draft_token_ids, num_accepted, final)


def forced_acceptance(target_logits: torch.Tensor, draft_token_ids: torch.Tensor, num_accepted: torch.Tensor,
                      params: SamplingParams, generator: torch.Generator | None):
    """Synthetic acceptance (vLLM's synthetic mode): the count is decided outside; the token after
    the accepted drafts still comes from the target at that position. Not target text."""
    at = torch.gather(target_logits, 1, num_accepted[:, None, None].expand(-1, 1, target_logits.shape[-1]))[:, 0]
    final = select_tokens(at, params, generator)
    return num_accepted, _assemble(draft_token_ids, num_accepted, final)
