"""Every transformers internal moesd relies on (engine/hf_compat.py), checked for each family we test.

When a transformers release moves one of them, this file says which and for which family."""

import pytest

torch = pytest.importorskip("torch")

from moesd.engine import hf_compat  # noqa: E402

FAMILIES = ["llama", "qwen3_moe", "mixtral", "olmoe", "qwen2_moe"]
MOE = {"qwen3_moe", "mixtral", "olmoe", "qwen2_moe"}


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_modules_and_routers(tiny_model, family):
    model = tiny_model(family).model
    experts = hf_compat.find_experts_modules(model)
    assert len(experts) == (model.config.num_hidden_layers if family in MOE else 0)
    routers = hf_compat.find_routers(model, experts)
    assert len(routers) == len(experts) and all(r is not None for r in routers)
    for r in routers:
        logits = hf_compat.router_logits(r(torch.randn(3, model.config.hidden_size)))
        assert logits.shape == (3, tiny_model(family).num_experts)
        assert isinstance(hf_compat.router_normalizes(r), bool)


@pytest.mark.parametrize("family", sorted(MOE))
def test_experts_call_routing_can_be_read_and_replaced(tiny_model, family):
    loaded = tiny_model(family)
    experts = hf_compat.find_experts_modules(loaded.model)
    ids = torch.tensor([[5, 6, 7, 8]])
    seen = []

    def read(module, args, kwargs):
        index, weights = hf_compat.experts_call_routing(args, kwargs)
        seen.append((index.shape, weights.shape))
        return hf_compat.with_routing(args, kwargs, index, weights)  # an identity replacement

    def force_expert_0(module, args, kwargs):
        index, weights = hf_compat.experts_call_routing(args, kwargs)
        return hf_compat.with_routing(args, kwargs, torch.zeros_like(index), weights)

    with torch.no_grad():
        reference = loaded.model(ids).logits
        handles = [m.register_forward_pre_hook(read, with_kwargs=True) for m in experts]
        same = loaded.model(ids).logits
        for h in handles:
            h.remove()
        handles = [m.register_forward_pre_hook(force_expert_0, with_kwargs=True) for m in experts]
        forced = loaded.model(ids).logits
        for h in handles:
            h.remove()
    assert seen == [((4, loaded.top_k), (4, loaded.top_k))] * len(experts)
    torch.testing.assert_close(same, reference)
    assert not torch.allclose(forced, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_operations(tiny_model, family):
    """Prefill two rows, crop, select one row, gather its slots in place: the next token's logits equal
    a fresh forward over the same tokens."""
    model = tiny_model(family).model
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    pos = torch.arange(5)[None].expand(2, -1)
    with torch.no_grad():
        cache = hf_compat.new_cache(model)
        hf_compat.forward_with_cache(model, cache, ids, None, pos, 1)
        hf_compat.crop_cache(cache, 2)  # keep 3 slots per row
        hf_compat.select_cache_rows(cache, torch.tensor([1]))
        hf_compat.gather_cache_slots(cache, torch.arange(3)[None], torch.ones(1, 3, dtype=torch.bool))
        nxt = torch.tensor([[20]])
        got = hf_compat.forward_with_cache(model, cache, nxt, None, torch.tensor([[3]]), 1)
        fresh = hf_compat.forward_with_cache(model, hf_compat.new_cache(model), torch.tensor([[10, 11, 12, 20]]),
                                             None, torch.arange(4)[None], 1)
    torch.testing.assert_close(got, fresh, rtol=1e-4, atol=1e-4)
