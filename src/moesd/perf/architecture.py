"""Architecture spec of a decoder-only LM: sizes, parameter counts, bytes and FLOPs per token.

Built from a Hugging Face config.json by `moesd.perf.hf_config`. Counts are exact for the
families we parse (every weight and bias matrix), so they can be checked against model cards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ArchSpec:
    name: str
    family: str  # Hugging Face model_type
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    num_experts: int  # routed experts E per MoE layer; 1 for a dense model
    experts_per_token: int  # top-K; 1 for a dense model
    num_moe_layers: int
    expert_ffn_size: int  # intermediate size of one routed expert; 0 for a dense model
    shared_expert_ffn_size: int  # summed intermediate size of the always-on shared experts
    dense_ffn_size: int  # intermediate size of dense (non-MoE) FFN layers; 0 if none
    bytes_per_param: float  # non-expert weights
    expert_bytes_per_param: float  # routed-expert weights (differs under e.g. MXFP4)
    # Exact parameter counts, summed over all layers.
    embedding_params: int  # input token (and learned position) embeddings: looked up, not multiplied
    lm_head_params: int  # 0 when tied to the input embedding
    attention_params: int
    dense_ffn_params: int
    shared_expert_params: int
    router_params: int
    params_per_expert: int  # one routed expert in one layer
    norm_params: int
    # KV-cache elements one token adds, all layers together; 0 = grouped-query attention's
    # 2 x layers x kv_heads x head_dim (MLA parsers set their compressed latent + rope dims).
    kv_cache_elements_per_token: int = 0

    @property
    def is_moe(self) -> bool:
        return self.num_moe_layers > 0 and self.num_experts > 1

    @property
    def routed_expert_params(self) -> int:
        return self.num_experts * self.params_per_expert * self.num_moe_layers

    @property
    def non_expert_params(self) -> int:
        return (
            self.embedding_params
            + self.lm_head_params
            + self.attention_params
            + self.dense_ffn_params
            + self.shared_expert_params
            + self.router_params
            + self.norm_params
        )

    @property
    def total_params(self) -> int:
        return self.non_expert_params + self.routed_expert_params

    @property
    def active_params(self) -> int:
        """Parameters one token uses: total minus the routed experts it does not select."""
        unselected = (self.num_experts - self.experts_per_token) * self.params_per_expert
        return self.total_params - unselected * self.num_moe_layers

    @property
    def active_params_excl_input_embedding(self) -> int:
        """The convention DeepSeek and OpenAI cards use: the input embedding is a lookup.

        When embeddings are tied the matrix also serves as the LM head and stays counted.
        """
        looked_up = 0 if self.tie_word_embeddings else self.embedding_params
        return self.active_params - looked_up

    @property
    def expert_bytes(self) -> float:
        """Bytes to load one expert index in every MoE layer (the paper's per-expert load, k2)."""
        return self.params_per_expert * self.num_moe_layers * self.expert_bytes_per_param

    @property
    def non_expert_bytes(self) -> float:
        """Weight bytes every forward reads regardless of routing (the paper's bias term).

        Shared experts are always loaded, so they are here (beyond the paper, which leaves them
        out of its model). Input embeddings are gathered, not streamed, unless tied to the LM head.
        """
        streamed = self.non_expert_params
        if not self.tie_word_embeddings:
            streamed -= self.embedding_params
        return streamed * self.bytes_per_param

    @property
    def dense_matmul_params(self) -> int:
        """Weights every token multiplies outside the routed experts."""
        return self.active_params_excl_input_embedding - self.experts_per_token * (
            self.params_per_expert * self.num_moe_layers
        )

    @property
    def flops_per_token(self) -> float:
        """Matmul FLOPs per token, 2 per active weight; attention over the context is left out,
        as the paper leaves out the KV cache."""
        return 2.0 * self.active_params_excl_input_embedding

    @property
    def active_bytes_per_token(self) -> float:
        """Weight bytes a single token reads: non-expert bytes plus K experts."""
        return self.non_expert_bytes + self.experts_per_token * self.expert_bytes

    def kv_bytes_per_token(self, kv_bytes_per_element: float = 2.0) -> float:
        """KV-cache bytes one token of context occupies (and a forward reads), all layers together;
        serving engines keep the cache in bf16 unless told otherwise (fp8: 1 byte)."""
        elements = self.kv_cache_elements_per_token or 2 * self.num_layers * self.num_kv_heads * self.head_dim
        return elements * kv_bytes_per_element

    @property
    def weight_bytes(self) -> float:
        """All weights in memory (embeddings included)."""
        return self.non_expert_params * self.bytes_per_param + self.routed_expert_params * self.expert_bytes_per_param

    def with_experts_per_token(self, top_k: int) -> "ArchSpec":
        """The paper's sparsity sweep edits num_experts_per_tok in config.json; so do we."""
        from dataclasses import replace

        from moesd.perf.experts import check_experts

        check_experts(self.num_experts, top_k)
        return replace(self, experts_per_token=top_k)

    def summary(self) -> dict:
        out = asdict(self)
        out.update(
            total_params=self.total_params,
            active_params=self.active_params,
            active_params_excl_input_embedding=self.active_params_excl_input_embedding,
            expert_bytes=self.expert_bytes,
            non_expert_bytes=self.non_expert_bytes,
            flops_per_token=self.flops_per_token,
        )
        return out
