"""What proposes the draft tokens, and what one draft forward costs, for each kind serving engines run.

- `model`: a separate small LM (a preset or config.json), the paper's Qwen2-0.5B.
- `eagle`: an EAGLE(-1/-2) head (Li et al., arXiv 2401.15077): one decoder layer over the target's hidden
  states (plus an fc from 2h to h) feeding the target's own LM head. Its FFN is dense, as wide as one of the
  target's experts (EAGLE's Mixtral head: 14,336) or the target's dense FFN.
- `mtp`: a multi-token-prediction module (DeepSeek-V3 section 2.2): one full target layer, MoE included
  (K routed experts per token plus the shared ones), an eh_proj (2h -> h), and the target's LM head.
- `ngram`: prompt lookup, no model: zero draft cost.

Heads are built from the target's own config, so their bytes and FLOPs follow from it.
"""

from __future__ import annotations

from dataclasses import replace

from moesd.errors import MoesdError
from moesd.perf.architecture import ArchSpec

DRAFT_KINDS = ("model", "eagle", "mtp", "ngram")


def _one_layer(target: ArchSpec) -> dict:
    per = lambda total: total // max(target.num_layers, 1)  # noqa: E731
    return dict(num_layers=1, attention_params=per(target.attention_params), norm_params=3 * target.hidden_size,
                embedding_params=0, tie_word_embeddings=False,
                # The LM head is the target's: read every draft step, so it counts as the head's.
                lm_head_params=target.lm_head_params or target.embedding_params,
                kv_cache_elements_per_token=per(target.kv_cache_elements_per_token))


def draft_head(target: ArchSpec, kind: str) -> ArchSpec | None:
    """The draft as an ArchSpec (None for model-free drafting); `model` drafts are resolved by name instead."""
    h = target.hidden_size
    if kind == "ngram":
        return None
    if kind == "eagle":
        ffn = target.expert_ffn_size if target.is_moe else (target.dense_ffn_size or 4 * h)
        return replace(target, name=f"EAGLE head of {target.name}", family="eagle", **_one_layer(target),
                       num_experts=1, experts_per_token=1, num_moe_layers=0, expert_ffn_size=0,
                       shared_expert_ffn_size=0, dense_ffn_size=ffn,
                       dense_ffn_params=3 * h * ffn + 2 * h * h,  # gated FFN + the fc over [hidden; embedding]
                       shared_expert_params=0, router_params=0, params_per_expert=0)
    if kind == "mtp":
        if not target.is_moe:
            raise MoesdError(f"an MTP module is one target layer with its MoE; {target.name} is dense "
                             f"(use --draft-kind eagle or a draft model)")
        moe_layers = max(target.num_moe_layers, 1)
        return replace(target, name=f"MTP module of {target.name}", **_one_layer(target), num_moe_layers=1,
                       dense_ffn_size=0, dense_ffn_params=2 * h * h,  # eh_proj
                       shared_expert_params=target.shared_expert_params // moe_layers,
                       router_params=target.router_params // moe_layers)
    raise MoesdError(f"unknown draft kind {kind!r} (use {', '.join(DRAFT_KINDS)})")
