"""How `--gamma auto`'s cost model prices a round against a decode step, call after call, beside what the two measure.

    .venv/bin/python benchmarks/adaptive_gamma_drift.py stdlib:4 [--calls 40] [--gamma 1] [--option anchored_index=1]

Per call k (seed k, in `pass_order`): autoregressive decoding, fixed draft length `--gamma` and auto, one engine each
for the whole run (auto's keeps its cost model between calls, as benchmarks/adaptive_gamma.py's passes do). The
measured relation is the median round of the fixed engine at the full batch over the median decode step of the
autoregressive one in the same pass; the priced one is what auto's cost model prices the two at after its call
(StepCostModel.steps_s at the full batch, catch-up 0), with its decode price over the measured decode step. One line
per call, then the medians over the calls where auto ran rounds and where it only decoded: a priced relation that
moves with what auto chose, where the measured one does not, is the cost model's error, and it decides the verdict
in a cell where SD and decoding lie within a few % (docs/results.md section 15).
"""

from __future__ import annotations

import argparse
import statistics

from adaptive_gamma import cell, parse_cell
from adaptive_gamma_diagnose import option_value
from moesd.engine.factory import ModelCache
from pass_plan import run_passes


def _median_step_s(res, batch: int, kind: str) -> float:
    """The median step of `kind` ("decode" or "verify": rounds, the merged first one left out) at batch size `batch`."""
    steps = [s["step_s"] for s in res.metrics["steps"] if s["kind"] == kind and s["batch_size"] == batch]
    return statistics.median(steps) if steps else float("nan")


def drift(where: str, calls: int, gamma: int, max_gamma: int, options: tuple, max_new: int) -> list[dict]:
    name, batch, limits = parse_cell(where, max_new)
    configs = [("ar", 0, False), (f"g{gamma}", gamma, False), ("auto", max_gamma, True)]
    engines, prompts, eos = cell(name, batch, configs, ModelCache(), options={"auto": options})
    cost = engines["auto"].gamma_cost_model
    rows: list[dict] = []

    def run(label: str, call: int):
        res = engines[label].generate(prompts, limits, eos, seed=call)
        if label == "auto":
            return res, [float(x) for x in cost.steps_s(batch, gamma, 0)]  # priced right after the call
        return res, None

    def after(call: int, runs: dict) -> bool:
        (ar, _), (fixed, _), (auto, priced) = runs["ar"][-1], runs[f"g{gamma}"][-1], runs["auto"][-1]
        decode_s, round_s = _median_step_s(ar, batch, "decode"), _median_step_s(fixed, batch, "verify")
        hist = auto.metrics["adaptive"]["gamma_histogram"]
        vs_ar = auto.metrics["stages"]["tokens_per_s"] / ar.metrics["stages"]["tokens_per_s"]
        row = {"call": call, "auto_vs_ar": vs_ar,
               "rounds": any(g != "0" for g in hist), "gammas": hist, "measured": round_s / decode_s,
               "priced": priced[gamma] / priced[0], "priced_decode": priced[0] / decode_s,
               "speed_index": cost.scales().get("speed_index", float("nan"))}  # none before a step is timed
        rows.append(row)
        print(f"call {call + 1}: auto / AR {row['auto_vs_ar']:.2f}, gammas {hist}; g{gamma} round / decode step: "
              f"measured {row['measured']:.2f}, priced {row['priced']:.2f} (decode priced at {row['priced_decode']:.2f}"
              f"x the measured), speed index {row['speed_index']:.2f}", flush=True)
        return False

    run_passes([label for label, _, _ in configs], range(calls), run, after_pass=after)
    for rounds, what in ((True, "ran rounds"), (False, "only decoded")):
        part = [r for r in rows if r["rounds"] == rounds]
        if part:
            print(f"{where} g{gamma}, {len(part)} of {calls} calls where auto {what}: round / decode step measured "
                  f"{statistics.median(r['measured'] for r in part):.2f}, priced "
                  f"{statistics.median(r['priced'] for r in part):.2f} (range {min(r['priced'] for r in part):.2f}-"
                  f"{max(r['priced'] for r in part):.2f}), decode priced "
                  f"{statistics.median(r['priced_decode'] for r in part):.2f}x the measured; auto / AR "
                  f"{statistics.median(r['auto_vs_ar'] for r in part):.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cell", metavar="SETTING:B", help="a cell of benchmarks/adaptive_gamma.py")
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--gamma", type=int, default=1, help="the fixed draft length whose round is priced and measured")
    ap.add_argument("--max-gamma", type=int, default=6, help="auto's maximum draft length")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="an option of auto's policy or cost model (engine/factory.py), repeatable")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    a = ap.parse_args()
    options = tuple((k, option_value(v)) for k, v in (o.split("=", 1) for o in a.option))
    drift(a.cell, a.calls, a.gamma, a.max_gamma, options, a.max_new_tokens)


if __name__ == "__main__":
    main()
