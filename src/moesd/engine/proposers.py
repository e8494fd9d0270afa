"""Draft proposals: a draft model, prompt lookup (n-gram), or synthetic acceptance.

Each proposer returns `draft_token_ids [B, gamma]` and `draft_probs [B, gamma, V]` (the target's
vocabulary width), or None for probabilities when the proposal is deterministic and the caller may
treat q as one-hot. The engine calls `start` after prefill, `propose` each round, `accept` with what
the target kept, and `select_rows` when sequences finish.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from moesd.engine.loading import LoadedModel
from moesd.engine.ragged_kv import RaggedKV
from moesd.engine.static_kv import StaticKV, new_kv
from moesd.engine.sampling import SamplingParams, probs_from_logits
from moesd.errors import MoesdError


def left_pad(rows: list[list[int]], device: torch.device, pad_id: int = 0,
             width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token lists -> (ids [B, T], valid [B, T]) with padding on the left; T >= `width`."""
    width = max(width, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            valid[i, width - len(r):] = True
    return ids.to(device), valid.to(device)


def check_vocabularies(target: LoadedModel, draft: LoadedModel) -> None:
    """Refuse a draft whose tokenizer maps text to different ids than the target's."""
    tv, dv = target.tokenizer.get_vocab(), draft.tokenizer.get_vocab()
    common = set(tv) & set(dv)
    if not common:
        raise MoesdError(f"draft {draft.name} and target {target.name} share no tokens: incompatible tokenizers")
    mismatched = sum(1 for t in common if tv[t] != dv[t])
    if mismatched or len(common) < 0.99 * min(len(tv), len(dv)):
        raise MoesdError(f"draft {draft.name} and target {target.name} have incompatible tokenizers "
                         f"({mismatched} shared tokens map to different ids, {len(common)} shared)")


class DraftModelProposer:
    kind = "draft_model"
    # `start`'s last logits give the next round's first draft token: that round drafts with one forward fewer
    # (what --gamma auto's cost model must know to time it, engine/step_cost_model.py).
    start_scores_next = True

    def __init__(self, draft: LoadedModel, target_vocab_size: int, unknown_id: int = 0, kv_cache: str = "static"):
        self.draft = draft
        self.kv_cache = kv_cache  # engine/static_kv.py: "static" or "ragged"
        self.graphs = None  # engine/cuda_graphs.GraphPlan of the run, if any
        self.target_vocab = target_vocab_size
        # One mechanism for every vocabulary mismatch: draft id d stands for target id to_target[d],
        # and target id t is read by the draft as to_draft[t]. A draft that lacks some target ids
        # proposes them with probability zero (and reads them as `unknown_id`); that only changes what
        # it proposes, never what is accepted, so decoding stays lossless (engine/vocab_map.py).
        # A draft trained on a subset of the target's vocabulary brings its map (moesd_vocab_map.json);
        # a smaller vocabulary without one covers the target's first ids.
        self.to_draft = self.to_target = None
        vmap = getattr(draft, "vocab_map", None)
        device = draft.device
        if vmap is not None:
            if vmap.target_vocab != target_vocab_size:
                raise MoesdError(f"draft {draft.name} maps onto a {vmap.target_vocab}-token vocabulary, "
                                 f"the target has {target_vocab_size}")
            self.to_draft = torch.from_numpy(vmap.to_draft).to(device)
            self.to_target = torch.from_numpy(vmap.target_ids).to(device)
        else:
            if draft.vocab_size < target_vocab_size:
                self.to_target = torch.arange(draft.vocab_size, device=device)
            input_vocab = draft.model.get_input_embeddings().num_embeddings
            if input_vocab < target_vocab_size:
                ids = torch.arange(target_vocab_size, device=device)
                self.to_draft = torch.where(ids < input_vocab, ids, torch.full_like(ids, unknown_id))
        self.kv: RaggedKV | StaticKV | None = None
        self.pending: list[list[int]] = []  # per row: sequence tokens not yet in the draft cache
        self.next_logits: torch.Tensor | None = None  # prefill logits, consumed by the first round
        self.block_valid: torch.Tensor | None = None
        self.forward_s = 0.0

    def _logits_to_target_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """Target-width logits: -inf (probability zero) where the draft has no token; a draft with a
        larger vocabulary may not propose ids the target lacks."""
        if self.to_target is None:
            return logits[..., : self.target_vocab]
        full = torch.full((*logits.shape[:-1], self.target_vocab), float("-inf"), dtype=logits.dtype,
                          device=logits.device)
        full[..., self.to_target] = logits
        return full

    def use_graphs(self, plan) -> None:
        """Fixed-shape caches whose one-token forwards are captured (engine/cuda_graphs.py)."""
        self.graphs = plan

    def start(self, prompts: list[list[int]]) -> None:
        """Prefill the prompts; their last logits give the first round's first draft token."""
        self.kv = new_kv(self.kv_cache, self.draft.model, self.draft.device, self.graphs, role="draft")
        self.pending = [[] for _ in prompts]
        ids, valid = left_pad(prompts, self.draft.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.next_logits = self._logits_to_target_vocab(self.kv.extend(self._readable(ids), valid,
                                                                           logits_to_keep=1)[:, -1])
        self.forward_s += time.perf_counter() - t0

    def _readable(self, ids: torch.Tensor) -> torch.Tensor:
        return ids if self.to_draft is None else self.to_draft[ids]

    def _forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        ids = self._readable(ids)
        t0 = time.perf_counter()
        logits = self.kv.extend(ids, valid, logits_to_keep=1)[:, -1]
        if self.draft.device.type == "cuda":
            torch.cuda.synchronize()
        self.forward_s += time.perf_counter() - t0
        return self._logits_to_target_vocab(logits)

    @torch.no_grad()
    def propose(self, gamma: int, histories, params: SamplingParams, generator):
        tokens, probs = [], []
        if self.next_logits is not None:  # first round: the prefill already scored the prompt
            logits, self.next_logits = self.next_logits, None
            self.block_valid = torch.zeros(len(self.pending), 0, dtype=torch.bool, device=self.draft.device)
        else:
            ids, valid = left_pad(self.pending, self.draft.device)
            self.block_valid = valid
            logits = self._forward(ids, valid)
        for k in range(gamma):
            if k > 0:
                logits = self._forward(tokens[-1][:, None], torch.ones_like(tokens[-1][:, None], dtype=torch.bool))
            if params.greedy:
                tok = logits.argmax(dim=-1)
            else:
                p = probs_from_logits(logits, params)
                tok = torch.multinomial(p, 1, generator=generator)[:, 0]
                probs.append(p)
            tokens.append(tok)
        draft_tokens = torch.stack(tokens, dim=1)
        return draft_tokens, (torch.stack(probs, dim=1) if probs else None)

    def accept(self, num_accepted: list[int], new_tokens: list[list[int]], gamma: int) -> None:
        """Keep the pending block and the accepted drafts the draft already processed (d_1..d_{gamma-1}).

        gamma 0 means the target decoded a token without drafting: it just joins the pending tokens."""
        if gamma == 0:
            self.pending = [p + t for p, t in zip(self.pending, new_tokens)]
            return
        in_cache = torch.tensor([min(a, gamma - 1) for a in num_accepted], device=self.draft.device)
        drafts_kept = torch.arange(gamma - 1, device=self.draft.device)[None, :] < in_cache[:, None]
        self.kv.keep_last_block(torch.cat([self.block_valid, drafts_kept], dim=1))
        self.pending = [toks[min(a, gamma - 1):] for a, toks in zip(num_accepted, new_tokens)]
        self.kv.compact()

    def select_rows(self, rows: list[int]) -> None:
        self.kv.select_rows(torch.tensor(rows, device=self.draft.device))
        self.pending = [self.pending[r] for r in rows]

    def add_rows(self, histories: list[list[int]], last_tokens: list[list[int]], replace: bool = False) -> None:
        """New sequences join the batch (continuous batching): prefill their history except the newest token,
        which stays pending like every other row's. `replace`: they are the whole batch now."""
        kv = new_kv(self.kv_cache, self.draft.model, self.draft.device)
        ids, valid = left_pad(histories, self.draft.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            kv.extend(self._readable(ids), valid, logits_to_keep=1)
        self.forward_s += time.perf_counter() - t0
        if replace and getattr(self.kv, "max_rows", None):  # fixed shapes: the same buffers, refilled
            self.kv.clear()
            self.kv.add_rows(kv)
            self.pending = [list(t) for t in last_tokens]
        elif replace or self.kv is None:
            self.kv, self.pending = kv, [list(t) for t in last_tokens]
        else:
            self.kv.add_rows(kv)
            self.pending += [list(t) for t in last_tokens]


class NgramProposer:
    """Prompt lookup: continue the most recent earlier occurrence of the sequence's last n tokens.

    E.g. history [1, 2, 3, 4, 2, 3], n = 2, gamma = 3: the suffix [2, 3] occurred at index 1, so the
    proposal is what followed it, [4, 2, 3]. Longer n are tried first (max_n down to min_n). A row's
    draft is as long as the continuation it found (`draft_lengths`, read by the engine after `propose`):
    shorter near the end of the history, empty with no match, so no row verifies guesses (in a batched
    verify its slots are padding, still computed; a step where no row has a draft is a plain decode).
    """

    kind = "ngram"

    def __init__(self, vocab_size: int, min_n: int = 2, max_n: int = 4):
        if not 1 <= min_n <= max_n:
            raise MoesdError(f"need 1 <= ngram min <= max, got {min_n}, {max_n}")
        self.vocab_size, self.min_n, self.max_n = vocab_size, min_n, max_n
        self.forward_s = 0.0
        self.draft_lengths: list[int] | None = None  # per row, set by each propose()

    def start(self, prompts) -> None:
        pass

    @staticmethod
    def lookup(history: np.ndarray, gamma: int, min_n: int, max_n: int) -> list[int] | None:
        for n in range(min(max_n, len(history) - 1), min_n - 1, -1):
            suffix = history[-n:]
            windows = np.lib.stride_tricks.sliding_window_view(history[:-1], n)
            hits = np.flatnonzero((windows == suffix).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return history[start : start + gamma].tolist()
        return None

    def propose(self, gamma: int, histories: list[list[int]], params: SamplingParams, generator):
        found = [self.lookup(np.asarray(h, dtype=np.int64), gamma, self.min_n, self.max_n) or [] for h in histories]
        self.draft_lengths = [len(f) for f in found]
        rows = [f + [0] * (gamma - len(f)) for f in found]  # padding the engine skips
        return torch.tensor(rows, dtype=torch.long), None

    def accept(self, num_accepted, new_tokens, gamma) -> None:
        pass

    def select_rows(self, rows) -> None:
        pass

    def add_rows(self, histories, last_tokens, replace: bool = False) -> None:
        pass


class SyntheticProposer:
    """vLLM's synthetic mode for timing at scale: each draft token is accepted with probability alpha
    (the accepted count is the number of leading successes), whatever the target says. Proposals come
    from `inner` (a draft model, so its cost is real) or are random tokens (no draft cost). The text
    produced is not the target's."""

    kind = "synthetic"

    def __init__(self, alpha: float, vocab_size: int, seed: int, inner: "DraftModelProposer | None" = None,
                 alpha_max: float | None = None):
        if not 0.0 <= alpha <= 1.0 or (alpha_max is not None and not alpha <= alpha_max <= 1.0):
            raise MoesdError(f"synthetic alpha must lie in [0, 1] (and alpha <= alpha max), got {alpha}, {alpha_max}")
        self.alpha, self.vocab_size, self.inner = alpha, vocab_size, inner
        self.alpha_max = alpha_max
        self.generator = torch.Generator().manual_seed(seed + 7919)
        # With a spread, each request (row) keeps its own alpha, drawn when it joins: prompts differ in how
        # predictable their text is, which is what an adaptive draft length has to cope with. Drawn from a generator
        # of their own, so the n-th request of two engines gets the same alpha whatever rounds either ran before it
        # (the acceptance coins consume `generator` per round): drawn from one generator, a paired pass of `auto`
        # and gamma 1 at the CPU MoE's B = 1 compared two different requests (ratios 0.45-3.7x, 5-95 %: 0.72-1.33).
        self.alpha_generator = torch.Generator().manual_seed(seed + 104729)
        self.row_alpha: torch.Tensor | None = None

    def _draw(self, n: int) -> torch.Tensor:
        lo, hi = self.alpha, self.alpha_max if self.alpha_max is not None else self.alpha
        return lo + (hi - lo) * torch.rand(n, generator=self.alpha_generator)

    @property
    def forward_s(self) -> float:
        return self.inner.forward_s if self.inner is not None else 0.0

    @property
    def start_scores_next(self) -> bool:
        return self.inner is not None

    def use_graphs(self, plan) -> None:
        if self.inner is not None:
            self.inner.use_graphs(plan)

    def start(self, prompts) -> None:
        if self.alpha_max is not None:
            self.row_alpha = self._draw(len(prompts))
        if self.inner is not None:
            self.inner.start(prompts)

    def propose(self, gamma: int, histories, params, generator):
        if self.inner is not None:
            tokens, _ = self.inner.propose(gamma, histories, params, generator)
            return tokens, None
        return torch.randint(0, self.vocab_size, (len(histories), gamma), generator=self.generator), None

    def forced_accepts(self, batch_size: int, gamma: int) -> torch.Tensor:
        alpha = self.row_alpha if self.row_alpha is not None and len(self.row_alpha) == batch_size \
            else torch.full((batch_size,), self.alpha)
        coins = torch.rand(batch_size, gamma, generator=self.generator) < alpha[:, None]
        return torch.cumprod(coins.long(), dim=1).sum(dim=1)

    def accept(self, num_accepted, new_tokens, gamma) -> None:
        if self.inner is not None:
            self.inner.accept(num_accepted, new_tokens, gamma)

    def select_rows(self, rows) -> None:
        if self.row_alpha is not None:
            self.row_alpha = self.row_alpha[torch.tensor(rows, dtype=torch.long)]
        if self.inner is not None:
            self.inner.select_rows(rows)

    def add_rows(self, histories, last_tokens, replace: bool = False) -> None:
        if self.alpha_max is not None:
            new = self._draw(len(histories))
            self.row_alpha = new if replace or self.row_alpha is None else torch.cat([self.row_alpha, new])
        if self.inner is not None:
            self.inner.add_rows(histories, last_tokens, replace)
