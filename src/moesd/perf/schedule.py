"""Export the best draft length per batch size as vLLM's dynamic SD table.

vLLM (PR #32374, docs/features/speculative_decoding/dynamic_speculative_decoding.md) takes
``num_speculative_tokens_per_batch_size``: rows [start_bs, end_bs, K] covering batch-size ranges,
K = 0 disabling speculation. We evaluate every integer batch size and merge equal neighbours.
"""

from __future__ import annotations

import numpy as np

from moesd.errors import MoesdError
from moesd.perf.prediction import Acceptance, Scenario, predict
from moesd.perf.summary import best_gamma, fitting_columns


def deployable_gammas(gammas, speedup: np.ndarray, max_distinct: int, min_gain: float) -> tuple[list[int], float]:
    """At most `max_distinct` draft lengths (0, no SD, counts as one) that keep every batch size within a
    fraction `min_gain` of its best predicted speedup. Engines compile per draft length, so a table that jumps
    between many of them is not deployable. Exhaustive over subsets (gamma <= 16: at most 2^17 small subsets);
    among the feasible subsets of the smallest size, the one with the largest total speedup. Returns the
    chosen set and its worst relative loss; an infeasible request says what the best set loses."""
    import itertools

    g = [0, *gammas]
    table = np.vstack([np.ones((1, speedup.shape[1])), np.maximum(speedup, 0.0)])  # row 0: no SD, 1x
    best = table.max(axis=0)
    fallback = None
    for size in range(1, min(max_distinct, len(g)) + 1):
        chosen = None
        for subset in itertools.combinations(range(len(g)), size):
            got = table[list(subset)].max(axis=0)
            loss = float(np.max(1.0 - got / best))
            total = float(got.sum())
            if fallback is None or (loss, -total) < fallback[1:]:
                fallback = (subset, loss, -total)
            if loss <= min_gain + 1e-12 and (chosen is None or total > chosen[1]):
                chosen = (subset, total, loss)
        if chosen is not None:
            return [g[i] for i in chosen[0]], chosen[2]
    subset, loss, _ = fallback
    raise MoesdError(f"no {max_distinct} draft lengths keep every batch size within {100 * min_gain:g} % of its best "
                     f"speedup (the best {len(subset)} lose up to {100 * loss:.1f} %): raise --min-gain or "
                     f"--max-distinct")


def best_gamma_schedule(scenario: Scenario, max_batch_size: int, gammas, acceptance: Acceptance,
                        max_distinct: int | None = None, min_gain: float = 0.0) -> list[list[int]]:
    batch_sizes = np.arange(1, max_batch_size + 1)
    grid = predict(scenario, batch_sizes, gammas, acceptance)
    ok = fitting_columns(grid)  # batch sizes past the memory limit get no entry: the engine cannot run them
    g = grid["gamma"][:, 0]
    sp = grid["speedup"][:, ok]
    if max_distinct is not None:
        allowed, _ = deployable_gammas([int(x) for x in g], sp, max_distinct, min_gain)
        keep = [i for i, x in enumerate(g) if int(x) in allowed]
        g, sp = g[keep], sp[keep]
        if 0 not in allowed:  # every batch size then speculates, with the best allowed gamma
            sp = np.maximum(sp, 1.0 + 1e-12)
    best = best_gamma(grid["batch_size"][0][ok], g, sp) if len(g) else \
        [{"batch_size": int(b), "gamma": 0} for b in grid["batch_size"][0][ok]]
    rows: list[list[int]] = []
    for entry in best:
        b, k = entry["batch_size"], entry["gamma"]
        if rows and rows[-1][2] == k:
            rows[-1][1] = b
        else:
            rows.append([b, b, k])
    return rows


def vllm_config(rows: list[list[int]]) -> dict:
    return {"num_speculative_tokens_per_batch_size": rows}


def trtllm_config(rows: list[list[int]]) -> dict:
    """TensorRT-LLM's speculative config fields (tensorrt_llm/llmapi/llm_args.py, DecodingBaseConfig, read
    2026-11-27): `draft_len_schedule` maps batch-size *lower bounds* to draft lengths ({1: 4, 4: 2, 8: 0}: from 1
    draft 4, from 4 draft 2, from 8 no SD), must contain {1: max_draft_len}, and its last entry holds for every
    larger batch size."""
    schedule = {str(start): k for start, _, k in rows}
    return {"max_draft_len": rows[0][2], "draft_len_schedule": schedule}


# vLLM's speculative_config forms, and which vLLM takes which (from the sources and docs named).
VLLM_FORMS = {
    "vllm": "complete speculative_config; per-batch-size table as [start, end, K] rows (vLLM docs v0.25, "
            "docs/features/speculative_decoding/dynamic_speculative_decoding.md)",
    "vllm-ranges": "complete speculative_config; table as a dict of inclusive \"start-end\" keys (the final "
                   "description of vllm PR #32374: gaps inherit the previous K)",
    "vllm-dynamic": "DynamicSpeculativeConfig (vllm/v1/spec_decode/dynamic in the dynamic-SD branch of PR #32374, "
                    "whose generate_config.py writes it; upstream status unverified): batch_stats = predicted ITL "
                    "in ms per batch size and K (K = 0 and 1 always present), acceptance_rate_per_pos; vLLM picks K online by acceptance length / ITL",
    "vllm-table": "only num_speculative_tokens_per_batch_size rows (what moesd printed before the complete form)",
}

# What vLLM's `method` is for each kind of draft moesd prices (vllm/config/speculative.py).
VLLM_METHODS = {"model": "draft_model", "eagle": "eagle", "mtp": "mtp", "ngram": "ngram"}


def vllm_speculative_config(rows: list[list[int]], method: str, model: str | None, form: str) -> dict:
    """The JSON a user passes to `vllm serve --speculative-config`: num_speculative_tokens is the largest K in
    the table (vLLM sizes its buffers and CUDA graphs at startup for it; the table may only go lower)."""
    k_max = max(k for _, _, k in rows)
    if k_max == 0:
        raise MoesdError("SD loses at every batch size here: do not enable it")
    config: dict = {"method": method}
    if model:
        config["model"] = model
    config["num_speculative_tokens"] = k_max
    if form == "vllm-ranges":
        config["num_speculative_tokens_per_batch_size"] = {f"{s}-{e}": k for s, e, k in rows}
    else:
        config["num_speculative_tokens_per_batch_size"] = rows
    return config


def per_position_acceptance(acceptance: Acceptance, k_max: int) -> list[float]:
    """vLLM's per-position acceptance rate (accepted at position i / drafts): the increase of the mean acceptance
    length from draft length i to i + 1; under i.i.d. acceptance, alpha^(i+1)."""
    lengths = [1.0] + [float(acceptance.sigma_for(g)) * (g + 1) for g in range(1, k_max + 1)]
    return [min(1.0, max(0.0, lengths[i + 1] - lengths[i])) for i in range(k_max)]


def dynamic_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... and the maximum itself: vLLM interpolates ITL linearly between profiled batch sizes and
    requires batch size 1 and its max_num_seqs to be present."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch_size:
        sizes.append(sizes[-1] * 2)
    return sorted(set(sizes + [max_batch_size]))


def vllm_dynamic_config(scenario: Scenario, acceptance: Acceptance, gammas, max_batch_size: int,
                        online: bool = True) -> dict:
    """DynamicSpeculativeConfig filled from predicted step times, so no profiling sweep is needed: ITL(B, 0) is a
    decode step; ITL(B, K) one SD round (K draft tokens, a verify of K + 1 tokens per sequence, rejection)."""
    k_max = max(gammas)
    ks = list(range(1, k_max + 1))
    sizes = dynamic_batch_sizes(max_batch_size)
    grid = predict(scenario, np.array(sizes), ks, acceptance)
    ok = fitting_columns(grid)
    if not ok[-1]:
        raise MoesdError(f"batch size {max_batch_size} does not fit in memory (weights + KV cache): lower "
                         f"--max-batch-size to what the server's max_num_seqs can hold")
    stats: dict[str, dict[str, float]] = {}
    for j, b in enumerate(sizes):
        row = {"0": round(1e3 * float(grid["target_decode_s"][0, j]), 4)}
        for i, k in enumerate(ks):
            round_s = (k * grid["draft_s"][i, j] + grid["target_verify_s"][i, j] + grid["reject_s"][i, j])
            row[str(k)] = round(1e3 * float(round_s), 4)
        stats[str(b)] = row
    return {"num_speculative_tokens_per_batch_size": None, "use_online_acceptance_rate": online,
            "batch_stats": stats, "max_num_speculative_tokens": k_max,
            "acceptance_rate_per_pos": [round(x, 6) for x in per_position_acceptance(acceptance, k_max)]}


SGLANG_ALGORITHMS = {"model": "STANDALONE", "eagle": "EAGLE", "mtp": "EAGLE", "ngram": "NGRAM"}


def sglang_adaptive(rows: list[list[int]], algorithm: str, draft_model: str | None) -> dict:
    """SGLang's adaptive speculation (`--speculative-adaptive --speculative-adaptive-config FILE`): tiers keyed by
    batch-size lower bounds, each with its candidate step counts (python/sglang test_adaptive_speculative*,
    read 2026-11-27). Each tier gets the predicted best draft length; a tier of [0] stops speculating (seen in
    published SGLang ladders; versions without it reject 0). Chain drafts only: topk 1, draft tokens = steps + 1."""
    k_max = max(k for _, _, k in rows)
    if k_max == 0:
        raise MoesdError("SD loses at every batch size here: do not enable it")
    args = ["--speculative-algorithm", algorithm]
    if draft_model:
        args += ["--speculative-draft-model-path", draft_model]
    args += ["--speculative-num-steps", str(k_max), "--speculative-eagle-topk", "1",
             "--speculative-num-draft-tokens", str(k_max + 1), "--speculative-adaptive",
             "--speculative-adaptive-config", "adaptive_config.json"]
    tiers = {str(start): {"candidate_steps": [k]} for start, _, k in rows}
    return {"server_args": args, "adaptive_config": tiers}
