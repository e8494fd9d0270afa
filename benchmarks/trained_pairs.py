"""Acceptance of the shipped draft/target pairs and the trained MoE's routing (docs/results.md section 11).

1. alpha, acceptance rate and mean acceptance length (bonus token counted) of
   models/stdlib-draft -> models/stdlib-moe-e32k4 and models/smollm2-distilled-draft -> SmolLM2-135M-Instruct
   on HumanEval prompts (raw code completion, no chat template), temperature 0 and 1, fp32;
2. the trained MoE's routing: distinct experts per layer in verify forwards vs tokens, against Eq. 8
   and a uniform-routing control on the same prompts; the expert load histogram;
3. the measured curve D(t) fed to the performance model (`--routing-curve`) beside Eq. 8.

    .venv/bin/python benchmarks/trained_pairs.py [--prompts 32] [--max-new-tokens 64] [-o results/trained_pairs.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from moesd.bench.workloads import batch_prompts, load_workload, tokenize_prompts
from moesd.engine.factory import EngineSpec, build_engine
from moesd.perf.acceptance_counts import AcceptanceCounts
from moesd.perf.experts import expected_active_experts

PAIRS = {
    "stdlib": ("models/stdlib-moe-e32k4", "models/stdlib-draft"),
    "smollm2": ("smollm2-135m-instruct", "models/smollm2-distilled-draft"),
}


def run_pair(target: str, draft: str, temperature: float, prompts_text, batch_size: int, max_new: int,
             routing: str = "model", gamma: int = 4) -> dict:
    spec = EngineSpec(target=target, draft=draft, gamma=gamma, temperature=temperature, dtype="fp32", routing=routing)
    engine = build_engine(spec)
    tgt = engine.target
    prompts = tokenize_prompts(tgt.tokenizer, prompts_text, chat=False)
    eos = tgt.tokenizer.eos_token_id
    counts = AcceptanceCounts()
    verify_pts: dict[int, list[float]] = {}
    load = None
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        res = engine.generate(prompts[i: i + batch_size], max_new, eos)
        counts = counts + res.acceptance
        ex = res.metrics.get("experts")
        if ex:
            for f in ex["forwards"]:
                if f["phase"] == "verify":
                    verify_pts.setdefault(f["num_tokens"], []).append(float(np.mean(f["distinct_experts"])))
            for phase in ("decode", "verify"):
                per_layer = ex["phases"].get(phase, {}).get("expert_load_per_layer")
                if per_layer:
                    load = np.asarray(per_layer) + (0 if load is None else load)
    out = {"target": target, "draft": draft, "temperature": temperature, "gamma": gamma, "routing": routing,
           "prompts": len(prompts), "batch_size": batch_size, "max_new_tokens": max_new,
           "alpha": counts.alpha, "acceptance_rate": counts.acceptance_rate,
           "mean_acceptance_length": counts.mean_acceptance_length, "seconds": time.perf_counter() - t0}
    if verify_pts:
        e, k = tgt.num_experts, tgt.top_k
        out["verify_distinct_vs_tokens"] = [[t, float(np.mean(v)), float(expected_active_experts(t, e, k))]
                                            for t, v in sorted(verify_pts.items())]
        out["expert_load_per_layer"] = load.astype(int).tolist()
        out["num_experts"], out["top_k"] = e, k
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--pairs", default="stdlib,smollm2")
    ap.add_argument("-o", "--output", default="results/trained_pairs.json")
    ap.add_argument("--curve", default="results/stdlib_moe_routing_curve.json",
                    help="where to write the trained MoE's measured D(t) for `moesd predict --routing-curve`")
    a = ap.parse_args()
    texts = batch_prompts(load_workload("humaneval"), a.prompts)
    results = []
    for name in a.pairs.split(","):
        target, draft = PAIRS[name]
        for temperature in (0.0, 1.0):
            r = run_pair(target, draft, temperature, texts, a.batch_size, a.max_new_tokens)
            results.append(r)
            print(f"{name} T={temperature:g}: alpha {r['alpha']:.3f}, acceptance rate {r['acceptance_rate']:.3f}, "
                  f"mean acceptance length {r['mean_acceptance_length']:.2f} ({r['seconds']:.0f} s)", flush=True)
        if name == "stdlib":  # routing: the same prompts at T = 0 with i.i.d. uniform routing as the control
            for bs in (1, 4):
                r = run_pair(target, draft, 0.0, texts[: max(bs, 4)], bs, a.max_new_tokens)
                results.append(r)
            results.append(run_pair(target, draft, 0.0, texts, a.batch_size, a.max_new_tokens, routing="uniform"))
    for r in results:
        if "verify_distinct_vs_tokens" in r:
            pts = ", ".join(f"{t}: {d:.1f} (Eq. 8 {q:.1f})" for t, d, q in r["verify_distinct_vs_tokens"][:: max(1, len(r["verify_distinct_vs_tokens"]) // 6)])
            print(f"routing {r['routing']} B={r['batch_size']}: verify distinct experts per layer vs tokens: {pts}")
    with open(a.output, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {a.output}")
    summarize_routing(results, a.curve)


def summarize_routing(results: list[dict], curve_path: str) -> None:
    """The expert-load statistics docs/results.md quotes, and D(t) from every learned-routing verify forward."""
    for r in results:
        if r.get("expert_load_per_layer") and r["batch_size"] == 16 and r["temperature"] == 0:
            load = np.asarray(r["expert_load_per_layer"], dtype=float)
            share = load / load.sum(axis=1, keepdims=True)
            cv = share.std(axis=1) / share.mean(axis=1)
            print(f"expert load, {r['routing']} routing, B=16: busiest expert {share.max():.3f} of a layer's tokens "
                  f"(uniform share {1 / share.shape[1]:.3f}), idlest {share.min():.4f}, per-layer CV "
                  f"{cv.min():.2f}-{cv.max():.2f}")
    pts: dict[int, list[float]] = {}
    model = [r for r in results if r.get("routing") == "model" and "verify_distinct_vs_tokens" in r]
    for r in model:
        for t, d, _ in r["verify_distinct_vs_tokens"]:
            pts.setdefault(int(t), []).append(d)
    if not model:
        return
    pts.setdefault(1, [float(model[0]["top_k"])])  # one token loads exactly K experts
    curve = {"num_experts": model[0]["num_experts"], "top_k": model[0]["top_k"],
             "source": f"{model[0]['target']} verify forwards on HumanEval (benchmarks/trained_pairs.py)",
             "points": [[t, float(np.mean(v))] for t, v in sorted(pts.items())]}
    with open(curve_path, "w") as f:
        json.dump(curve, f, indent=1)
    print(f"wrote {curve_path}")


if __name__ == "__main__":
    main()
