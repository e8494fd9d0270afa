"""Predicted vs measured gain of an expert budget: `moesd predict --expert-budget C` against a
`moesd bench --expert-budgets` sweep, both as SD speedup at C over SD speedup unbudgeted, at the
point's own batch size, gamma and measured sigma.

    python benchmarks/budget_gain.py RESULTS.jsonl --params FIT.json --target CONFIG --draft CONFIG
"""

from __future__ import annotations

import argparse
import json

from moesd.perf.inputs import build_scenario
from moesd.perf.prediction import Acceptance, predict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--params", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft")
    ap.add_argument("--hardware", default="cpu")
    a = ap.parse_args()
    recs = [json.loads(line) for line in open(a.results) if line.strip()]
    refs = {(r["batch_size"], r["gamma"], r["temperature"], r["routing"]): r for r in recs if r.get("expert_budget") is None}
    print("| B | gamma | C | experts verify (unbudgeted) | measured gain | predicted gain | "
          "measured T_verify ratio | predicted T_verify ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in recs:
        c = r.get("expert_budget")
        ref = refs.get((r["batch_size"], r["gamma"], r["temperature"], r["routing"]))
        if c is None or ref is None:
            continue
        acc = Acceptance(sigma=r["sigma"])  # the budgeted run's own acceptance
        pred = {}
        for budget in (None, c):
            scenario, _ = build_scenario(target=a.target, hardware=a.hardware, draft=a.draft, params_file=a.params,
                                         expert_budget=budget)
            pred[budget] = predict(scenario, [r["batch_size"]], [r["gamma"]], acc)
        gain_p = float(pred[c]["speedup"][0, 0] / pred[None]["speedup"][0, 0])
        tv_p = float(pred[c]["target_verify_s"][0, 0] / pred[None]["target_verify_s"][0, 0])
        print(f"| {r['batch_size']} | {r['gamma']} | {c} | {r['active_experts_verify']:.1f} ({ref['active_experts_verify']:.1f}) | "
              f"{r['speedup'] / ref['speedup']:.2f} | {gain_p:.2f} | {r['target_verify_s'] / ref['target_verify_s']:.2f} | "
              f"{tv_p:.2f} |")


if __name__ == "__main__":
    main()
