"""Confirm or refute the goals a table of benchmarks/adaptive_gamma.py missed, with a confidence interval.

On the AVX2 dev CPU two engines doing the same forwards read 0.73-1.21x each other per call (docs/results.md
section 15, `adaptive_gamma_diagnose.py --null`), so a table of 4 passes cannot tell a 3 % miss from noise. This
re-runs only the cells with a missed goal, and in them only auto and the configurations those goals compare it
with (the best or worst fixed gamma of the table, autoregressive decoding, every fixed gamma on a mixed batch),
for `--passes` mirrored passes (`pass_order`, seed k in pass k, as the table). Per goal it reports the median of
the per-pass ratios with a distribution-free confidence interval of that median (order statistics, the binomial
sign-test interval: no assumption on how the noise is distributed) and a verdict against the goal's threshold:
met (the interval lies at or above it), missed (below it) or undecided (it straddles the threshold).

    .venv/bin/python benchmarks/adaptive_gamma_confirm.py results/adaptive_gamma_avx2_a6b12ec.jsonl [--passes 20]
        [--min-cell-s 240] [--max-passes 200] [--cells stdlib:1,smollm:16] [--skip moe:64]
        [-o results/adaptive_gamma_confirm.jsonl]

`--cells` picks cells (SETTING:B, SETTING:B:mixed) and checks every goal there, missed or not. `--report FILE`
prints a confirm results file as a table (docs/results.md section 15).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from datetime import date

from scipy.stats import binom

from adaptive_gamma import cell, mixed_limits
from moesd.bench.machine import cpu_description
from moesd.engine.factory import ModelCache
from pass_plan import paired_median, pass_reps, run_passes

THRESHOLDS = {"best": 0.97, "worst": 1.10, "ar": 0.97, "mixed": 1.0}  # the goals: auto / other >= threshold


def median_interval(xs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): the narrowest interval [x_(j), x_(n+1-j)] of sorted xs (j as large as possible) whose
    coverage is at least `level`: it holds the true median with probability 1 - 2 P(Bin(n, 1/2) <= j - 1) for any
    continuous distribution. Below 6 samples no j reaches 95 %: the full range, with its coverage."""
    s, n = sorted(xs), len(xs)
    j = 1
    while j < n // 2 and 1.0 - 2.0 * binom.cdf(j, n, 0.5) >= level:
        j += 1
    return s[j - 1], s[n - j], float(1.0 - 2.0 * binom.cdf(j - 1, n, 0.5))


def verdict(low: float, high: float, threshold: float, strict: bool) -> str:
    """"met", "missed" or "undecided" for an interval against a goal (strict: auto must be above, not at)."""
    if low > threshold or (low == threshold and not strict):
        return "met"
    if high < threshold or (high == threshold and strict):
        return "missed"
    return "undecided"


def goals_of(rec: dict, every: bool) -> list[tuple[str, str]]:
    """(goal, the label auto is compared with) for the goals a table record missed (all of them with `every`), on
    the ratio of medians or on the median of per-pass ratios."""
    runs, auto = rec["runs"], rec["runs"]["auto"]["passes_tokens_per_s"]

    def missed(other: str, threshold: float, strict: bool = False) -> bool:
        of_medians = runs["auto"]["tokens_per_s"] / runs[other]["tokens_per_s"]
        paired = paired_median(auto, runs[other]["passes_tokens_per_s"])
        return every or any(r < threshold or (strict and r == threshold) for r in (of_medians, paired))

    if rec["mixed_lengths"]:
        return [("mixed", label) for label in runs if label.startswith("g") and missed(label, 1.0, strict=True)]
    wanted = [("best", rec["best_fixed"]), ("worst", rec["worst_fixed"]), ("ar", "ar")]
    return [(goal, other) for goal, other in wanted if missed(other, THRESHOLDS[goal])]


def confirm(rec: dict, goals: list[tuple[str, str]], passes: int, models: ModelCache, min_cell_s: float = 0.0,
            max_passes: int = 200) -> dict:
    """At least `passes` mirrored passes of auto and the goals' other configurations in the cell of `rec`, more (in
    pairs, up to `max_passes`) until the cell has run `min_cell_s`: cells of short calls get narrow intervals."""
    name, batch, max_gamma = rec["setting"], rec["batch_size"], max(rec["gammas"])
    limits = mixed_limits(batch, rec["max_new_tokens"]) if rec["mixed_lengths"] else rec["max_new_tokens"]
    others = sorted({other for _, other in goals})
    configs = [(label, 0 if label == "ar" else int(label[1:]), False) for label in others] + \
        [("auto", max_gamma, True)]
    engines, prompts, eos = cell(name, batch, configs, models)
    where = cell_of(rec)

    def run(label: str, rep: int) -> tuple[float, dict | None, list | None]:
        metrics = engines[label].generate(prompts, limits, eos, seed=rep).metrics
        a = metrics.get("adaptive")
        probes = [sum(t["probe"] for t in a["trace"]), a["probes_deferred"]] if a else None
        return metrics["stages"]["tokens_per_s"], a["gamma_histogram"] if a else None, probes

    def after_pass(rep: int, runs: dict) -> bool:
        print(f"  {where} pass {rep + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f}" for k, v in runs.items()), flush=True)
        return False

    runs = run_passes([label for label, _, _ in configs], pass_reps(passes, max_passes, min_cell_s), run, after_pass)
    tps = {label: [t for t, _, _ in r] for label, r in runs.items()}
    gammas = [h for _, h, _ in runs["auto"]]  # auto's choices per pass (gamma: steps)
    probes = [p for _, _, p in runs["auto"]]  # its probes and the probes its budget deferred, per pass
    passes, out = len(tps["auto"]), []
    for goal, other in goals:
        ratios = [a / b for a, b in zip(tps["auto"], tps[other])]
        low, high, coverage = median_interval(ratios)
        threshold = THRESHOLDS[goal]
        out.append({"goal": goal, "against": other, "threshold": threshold, "median": statistics.median(ratios),
                    "interval": [low, high], "coverage": coverage,
                    "verdict": verdict(low, high, threshold, strict=goal == "mixed"), "ratios": ratios})
        print(f"{where} auto / {other} ({goal} goal, >= {threshold}{' strictly' if goal == 'mixed' else ''}): "
              f"median {out[-1]['median']:.3f}, {100 * coverage:.1f} % interval [{low:.3f}, {high:.3f}] over "
              f"{passes} passes: {out[-1]['verdict']}", flush=True)
    return {"setting": name, "batch_size": batch, "mixed_lengths": rec["mixed_lengths"], "passes": passes,
            "tokens_per_s": tps, "auto_gammas": gammas, "auto_probes_deferred": probes, "goals": out,
            "table_commit": rec.get("commit")}


def cell_of(rec: dict) -> str:
    """SETTING:B or SETTING:B:mixed, as `--cells` and `--skip` name a record's cell."""
    return f"{rec['setting']}:{rec['batch_size']}" + (":mixed" if rec["mixed_lengths"] else "")


def report(path: str) -> None:
    """A confirm results file as docs/results.md's table."""
    print("| cell | goal | auto / | passes | median ratio | interval (coverage) | verdict | passes auto only decoded "
          "| median ratio in those / in the others |")
    print("|---" * 9 + "|")
    recs = [json.loads(line) for line in open(path)]
    for r in recs:
        plain = [set(h) == {"0"} for h in r.get("auto_gammas", [])]  # passes where auto ran no round
        for g in r["goals"]:
            low, high = g["interval"]
            split = [[x for x, p in zip(g["ratios"], plain) if p == side] for side in (True, False)]
            print(f"| {r['setting']} B={r['batch_size']}{' mixed' if r['mixed_lengths'] else ''} | {g['goal']} >= "
                  f"{g['threshold']} | {g['against']} | {r['passes']} | {g['median']:.3f} | [{low:.3f}, {high:.3f}] "
                  f"({100 * g['coverage']:.1f} %) | {g['verdict']} | "
                  + (f"{sum(plain)} of {len(plain)} | " + " / ".join(
                      f"{statistics.median(x):.3f}" if x else "-" for x in split) + " |" if plain else "- | - |"))
    for r in recs:  # each configuration's own level, for reading the goals' ratios
        tps, probes = r["tokens_per_s"], r.get("auto_probes_deferred")  # the latter since d85e3c9
        print(f"- {r['setting']} B={r['batch_size']}{' mixed' if r['mixed_lengths'] else ''}, medians: "
              + ", ".join(f"{k} {statistics.median(v):.1f} tok/s" for k, v in tps.items())
              + ("; median per pass vs ar: " + ", ".join(f"{k} {paired_median(v, tps['ar']):.3f}"
                                                         for k, v in tps.items() if k != "ar") if "ar" in tps else "")
              + (f"; auto's probes {sum(p for p, _ in probes)} in {len(probes)} passes, deferred by the budget "
                 f"{sum(d for _, d in probes)} times, in {sum(d > 0 and p == 0 for p, d in probes)} passes that ran "
                 "none" if probes else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", help="a results file of benchmarks/adaptive_gamma.py")
    ap.add_argument("--passes", type=int, default=20, help="passes per cell at least (even: mirrored pairs)")
    ap.add_argument("--min-cell-s", type=float, default=240.0,
                    help="a cell of short calls runs more passes, up to --max-passes, until it has run this long")
    ap.add_argument("--max-passes", type=int, default=200)
    ap.add_argument("--cells", help="SETTING:B[:mixed],...: these cells, every goal (default: the missed goals)")
    ap.add_argument("--skip", help="SETTING:B[:mixed],...: cells not re-run (calls too long for many passes)")
    ap.add_argument("-o", "--output", default="results/adaptive_gamma_confirm.jsonl")
    ap.add_argument("--report", action="store_true", help="print the table of a confirm results file (TABLE)")
    a = ap.parse_args()
    if a.report:
        report(a.table)
        return
    if a.passes < 2 or a.passes % 2:
        ap.error("--passes must be an even number >= 2")
    recs = [json.loads(line) for line in open(a.table)]
    chosen = set(a.cells.split(",")) if a.cells else None
    skipped = set(a.skip.split(",")) if a.skip else set()
    env = {"cpu": cpu_description(), "date": date.today().isoformat(), "commit": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    models: dict[str, ModelCache] = {}
    with open(a.output, "w") as f:  # opened before any work: an unwritable path fails at once
        for rec in recs:
            where = cell_of(rec)
            if (chosen is not None and where not in chosen) or where in skipped:
                continue
            goals = goals_of(rec, every=chosen is not None)
            if not goals:
                continue
            result = confirm(rec, goals, a.passes, models.setdefault(rec["setting"], ModelCache()), a.min_cell_s,
                             a.max_passes)
            f.write(json.dumps(dict(result, **env)) + "\n")
            f.flush()
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
