"""Diagnostics behind docs/results.md section 15 (`--gamma auto`): the checks that one cell of
benchmarks/adaptive_gamma.py needs when its table row alone cannot say why auto won or lost.

    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --alternate stdlib:16 [--calls 6] [--against 0]
        autoregressive (or `--against` gamma) and auto calls of one cell, alternating (paired ratios, one pair per
        line): per auto call its
        choices, the decision's time, held decisions, deferred probes, how it opened, and each side's median decode
        step and prefill.
    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --calibrate stdlib:4 [--gamma 2] [--calls 3]
        [--strengths 1,2,4,8,16]
        each request's expected tokens per round against what it committed: `--calls` greedy calls of a fixed-gamma
        engine, their rounds replayed through the acceptance estimates auto uses (engine/acceptance_posterior.py,
        the last call's estimates carried to the next as the engine does) under each per-request prior strength.

    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --cold stdlib:1 probe_optimism=0,2 [--calls 12]
        [--max-new-tokens 64]
        what one `moesd generate --gamma auto` call meets: every call builds fresh engines (nothing measured, nothing
        carried; the models are loaded once) for autoregressive decoding, the largest fixed gamma and auto with each
        value of the option, on a new batch of prompts per call, in mirrored order; paired medians per call.

    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --null stdlib:64 [--calls 8]
        the noise floor of a paired ratio: autoregressive decoding, a second autoregressive engine of the same spec
        and auto, in mirrored order; each against the first engine, per call and as the median.

    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --finish stdlib:4 [--calls 12]
        in a static batch, the rest of the run auto predicted at each step (its finish objective) against what the
        rest took, after rounds and after decode steps.

Greedy calls of the same prompts commit the same tokens, so `--calibrate` replays one call's rounds `--calls` times:
what changes between them is what the estimates carried, as in the benchmark's passes.

    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --variant smollm:1 margin=0.05,0.03 [--passes 5]
    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --variant moe:16:mixed margin=0.03,0   # mixed lengths
    .venv/bin/python benchmarks/adaptive_gamma_diagnose.py --variant moe:1 merged_opening=0,1+first_round_evidence=0,1
        auto with each value of one policy option (engine/adaptive_gamma.py AdaptiveGamma's keyword arguments),
        side by side with autoregressive decoding and the fixed gammas in the same passes: medians, auto / AR per
        pass, the gammas auto chose in each pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np

from adaptive_gamma import cell, eos_for, parse_cell, prompts_for, setting_specs
from moesd.engine.acceptance_posterior import PositionAcceptance, RequestAcceptance
from moesd.engine.factory import ModelCache, build_engine
from moesd.engine.metrics import AcceptanceStats
from pass_plan import paired_median, run_passes


def _rounded(values) -> str:
    return "-" if not values else "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def _median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values) if values else float("nan")


def alternate(where: str, calls: int, max_new: int, max_gamma: int, against: int = 0) -> None:
    """`calls` pairs of one autoregressive (`against` 0) or fixed-gamma call and one auto call, in alternating order."""
    name, batch = where.split(":")
    other = "ar" if against == 0 else f"g{against}"
    engines, prompts, eos = cell(name, int(batch), [(other, against, False), ("auto", max_gamma, True)], ModelCache())
    paired = []
    for call in range(calls):
        out = {}
        for label in (other, "auto") if call % 2 == 0 else ("auto", other):
            t0 = time.perf_counter()
            res = engines[label].generate(prompts, max_new, eos, seed=call)  # fresh synthetic draws per call
            steps = res.metrics["steps"]
            out[label] = (res, time.perf_counter() - t0, steps)
        (ar, _, ar_steps), (auto, _, auto_steps) = out[other], out["auto"]
        a = auto.metrics["adaptive"]
        ratio = auto.metrics["stages"]["tokens_per_s"] / ar.metrics["stages"]["tokens_per_s"]
        paired.append(ratio)
        decode = [s["step_s"] for s in auto_steps if s["gamma"] == 0]
        outside = [s["step_s"] - s["target_s"] for s in auto_steps if s["gamma"] == 0]
        ar_outside = [s["step_s"] - s["target_s"] for s in ar_steps if s["gamma"] == 0]
        ar_rounds = [s["step_s"] for s in ar_steps[1:] if s["gamma"] > 0]
        auto_rounds = [s["step_s"] for s in auto_steps[1:] if s["gamma"] > 0]
        # A round's time outside its three stages (bookkeeping; for auto also its decision), at the fixed gamma.
        ar_round_outside, auto_round_outside = (
            [s["step_s"] - s["target_s"] - s["draft_s"] - s["reject_s"] for s in steps[1:] if s["gamma"] == against > 0]
            for steps in (ar_steps, auto_steps))
        # Measured over predicted step time, per kind (the first step of a run that opened with a round also
        # carries the target's prefill: left out).
        errors = {False: [], True: []}
        for i, (t, st) in enumerate(zip(a["trace"], auto_steps)):
            if t.get("predicted_step_s") and not (i == 0 and st["kind"] != "decode"):
                errors[st["gamma"] > 0].append(st["step_s"] / t["predicted_step_s"])
        fit = ", ".join(f"{kind} {statistics.median(errors[k]):.2f} over {len(errors[k])}"
                        for k, kind in ((False, "decode steps"), (True, "rounds")) if errors[k])
        print(f"{where} call {call + 1}: {other} {ar.metrics['stages']['tokens_per_s']:.1f} tok/s, auto "
              f"{auto.metrics['stages']['tokens_per_s']:.1f} ({ratio:.3f}x); prefill {other} "
              f"{1e3 * ar.metrics['prefill_s']:.1f} ms, auto {1e3 * auto.metrics['prefill_s']:.1f} ms; steps "
              f"{other} {len(ar_steps)}, auto {len(auto_steps)}; median decode step {other} "
              f"{_median_ms([s['step_s'] for s in ar_steps if s['gamma'] == 0]):.2f} ms, auto "
              f"{_median_ms(decode):.2f} ms (outside the target's forward {other} {_median_ms(ar_outside):.2f}, auto "
              f"{_median_ms(outside):.2f}); rounds after the first {other} {len(ar_rounds)} "
              f"({1e3 * sum(ar_rounds):.1f} ms), auto {len(auto_rounds)} ({1e3 * sum(auto_rounds):.1f} ms); "
              + (f"median round of gamma {against} outside its stages {other} {_median_ms(ar_round_outside):.2f} ms, "
                 f"auto {_median_ms(auto_round_outside):.2f} ms; " if against else "") +
              f"auto gammas {a['gamma_histogram']}, decision {1e3 * a['decision_s']:.2f} ms over "
              f"{a['decisions']} steps ({a['held_decisions']} held), probes deferred {a['probes_deferred']}, "
              f"opening {a['opening']}; carried request spread (min, median, max alpha_r / alpha) "
              f"{_rounded(a['carried_acceptance'].get('request_spread'))}; pooled alpha {a['alpha_estimate']:.3f}; "
              f"measured / predicted step time (median): {fit or '-'}", flush=True)
    print(f"{where}: auto / {other} paired per call {', '.join(f'{r:.3f}' for r in paired)}; median "
          f"{statistics.median(paired):.3f}")
    if against:
        # What auto's cost model (one per engine, kept between its calls) prices a round of the fixed gamma at, at
        # the batch sizes that engine's last call ran them, against what they measured there.
        measured: dict[int, list] = {}
        for st in ar_steps[1:]:
            if st["gamma"] == against:
                measured.setdefault(st["batch_size"], []).append(st["step_s"])
        cost = engines["auto"].gamma_cost_model
        priced = cost.steps_by_batch_s(max(measured, default=1), against)[:, against]
        print(f"{where}: a round of gamma {against} priced by auto's cost model vs measured in the last {other} call "
              "(median, ms): " + ", ".join(f"B={b} {1e3 * priced[b - 1]:.1f} vs {_median_ms(v):.1f}"
                                            for b, v in sorted(measured.items())))


def option_value(text: str):
    """An option's value as given on the command line: an integer where it reads as one, else a float."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def variant(where: str, option: str, passes: int, max_new: int, gammas: list[int]) -> None:
    """auto with each value of one policy option (`option` NAME=V1,V2,...: an AdaptiveGamma keyword argument; several
    joined by "+" change together) side by
    side with autoregressive decoding and the fixed gammas, all in the same passes (`pass_order`):
    what a change of the option does to the choices, paired against the same noise. SETTING:B:mixed runs the
    mixed-lengths batch (benchmarks/adaptive_gamma.py `parse_cell`)."""
    name, batch, limits = parse_cell(where, max_new)
    # Options joined by "+" change together: A=0,1+B=0,1 runs (A=0, B=0) beside (A=1, B=1).
    keys, columns = zip(*((key, values.split(",")) for key, values in (part.split("=") for part in option.split("+"))))
    if len({len(c) for c in columns}) != 1:
        raise SystemExit(f"--variant {option}: every option needs as many values")
    autos = {"auto " + " ".join(f"{k}={v}" for k, v in zip(keys, vs)):
             tuple((k, option_value(v)) for k, v in zip(keys, vs)) for vs in zip(*columns)}
    configs = [("ar", 0, False)] + [(f"g{g}", g, False) for g in gammas] \
        + [(label, max(gammas), True) for label in autos]
    engines, prompts, eos = cell(name, batch, configs, ModelCache(), options=autos)
    labels = list(engines)

    def run(label: str, rep: int) -> tuple:
        res = engines[label].generate(prompts, limits, eos, seed=rep)  # as benchmarks/adaptive_gamma.py
        return res.metrics["stages"]["tokens_per_s"], res.metrics.get("adaptive", {}).get("gamma_histogram")

    runs = run_passes(labels, range(passes), run)
    median = {label: statistics.median(t for t, _ in r) for label, r in runs.items()}
    fixed = {label: median[label] for label in labels if label.startswith("g")}
    best = max(fixed, key=fixed.get)
    print(f"{where}, {passes} passes (medians): AR {median['ar']:.1f} tok/s, "
          + ", ".join(f"{label} {v:.1f}" for label, v in fixed.items())
          # Pass k draws its own synthetic requests (seed k): whether SD pays can change from pass to pass.
          + f"; {best} / AR per pass " + ", ".join(f"{a / b:.2f}" for (a, _), (b, _) in zip(runs[best], runs["ar"])))
    for label in autos:
        paired = [a / b for (a, _), (b, _) in zip(runs[label], runs["ar"])]
        vs_best = [a / b for (a, _), (b, _) in zip(runs[label], runs[best])]
        print(f"  {label}: {median[label]:.1f} tok/s, {median[label] / fixed[best]:.3f}x the best fixed gamma "
              f"({best}), {median[label] / median['ar']:.3f}x AR (medians per pass "
              f"{statistics.median(paired):.3f}x AR, {statistics.median(vs_best):.3f}x {best}); per pass vs AR "
              f"{', '.join(f'{x:.2f}' for x in paired)}, vs {best} {', '.join(f'{x:.2f}' for x in vs_best)}; "
              f"gammas per pass {' '.join(str(h) for _, h in runs[label])}", flush=True)


def cold(where: str, option: str, calls: int, max_new: int, gammas: list[int]) -> None:
    """Fresh engines every call (see the module's docstring): auto as a one-shot `moesd generate` call meets it."""
    name, batch = where.split(":")
    key, values = option.split("=")
    specs = {"ar": setting_specs(name, 0, False), f"g{max(gammas)}": setting_specs(name, max(gammas), False)}
    for v in values.split(","):
        specs[f"auto {key}={v}"] = dataclasses.replace(setting_specs(name, max(gammas), True),
                                                       gamma_policy_options=((key, option_value(v)),))
    models = ModelCache()
    warm = build_engine(specs["ar"], models)  # kernels and allocator, outside any measured engine
    tok = warm.target.tokenizer
    eos = eos_for(name, tok)
    warm.generate(prompts_for(name, tok, 1), 4, eos)

    def run(label: str, call: int) -> float:
        prompts = prompts_for(name, tok, int(batch), seed=call)  # a new batch per call, the same for every label
        res = build_engine(specs[label], models).generate(prompts, max_new, eos, seed=call)
        return res.metrics["stages"]["tokens_per_s"]

    runs = run_passes(list(specs), range(calls), run, after_pass=lambda call, runs: print(
        f"call {call + 1}: " + ", ".join(f"{label} {r[-1]:.1f}" for label, r in runs.items()), flush=True))
    fixed = f"g{max(gammas)}"
    for label in specs:
        if label.startswith("auto"):
            print(f"{where} cold, {calls} calls, {label}: median per call {statistics.median(runs[label]):.1f} tok/s, "
                  f"paired median vs {fixed} {paired_median(runs[label], runs[fixed]):.3f}, "
                  f"vs AR {paired_median(runs[label], runs['ar']):.3f}", flush=True)


def null(where: str, calls: int, max_new: int, max_gamma: int) -> None:
    """Two autoregressive engines of one spec and auto, paired against the first (see the module's docstring): what
    ratio two engines doing the same forwards read on this machine, beside auto's."""
    name, batch = where.split(":")
    engines, prompts, eos = cell(name, int(batch), [("ar", 0, False), ("ar again", 0, False),
                                                    ("auto", max_gamma, True)], ModelCache())
    runs = run_passes(list(engines), range(calls),
                      lambda label, call: engines[label].generate(prompts, max_new, eos, seed=call)
                      .metrics["stages"]["tokens_per_s"],
                      after_pass=lambda call, runs: print(f"call {call + 1}: " + ", ".join(
                          f"{label} {r[-1]:.1f} tok/s" for label, r in runs.items()), flush=True))
    for label in ("ar again", "auto"):
        paired = [a / b for a, b in zip(runs[label], runs["ar"])]
        print(f"{where}: {label} / ar per call {', '.join(f'{x:.3f}' for x in paired)}; median "
              f"{paired_median(runs[label], runs['ar']):.3f}", flush=True)


def record_rounds(where: str, gamma: int, max_new: int) -> tuple[list[tuple], int]:
    """One greedy call of a fixed-gamma engine: per round (request ids, accepted drafts per row, draft length)."""
    name, batch = where.split(":")
    engines, prompts, eos = cell(name, int(batch), [(f"g{gamma}", gamma, False)], ModelCache())
    rounds: list[tuple] = []
    original = AcceptanceStats.record

    def spy(self, request_ids, num_accepted, g):
        # Prompt lookup drafts fewer than gamma in some rows; auto counts every row as offered gamma positions.
        rounds.append((list(request_ids), list(num_accepted), gamma if isinstance(g, (list, tuple)) else g))
        original(self, request_ids, num_accepted, g)

    AcceptanceStats.record = spy
    try:
        engines[f"g{gamma}"].generate(prompts, max_new, eos)
    finally:
        AcceptanceStats.record = original
    return rounds, int(batch)


def replay(rounds: list[tuple], calls: int, max_gamma: int, strength: float) -> dict:
    """Each row's expected tokens before each round (as `AdaptiveGamma._rates` computes them) against the tokens it
    committed, over `calls` calls whose estimates carry from one to the next (AdaptiveGamma.carry_acceptance)."""
    pred, actual, low_pred, low_actual, high_pred, high_actual = [], [], [], [], [], []
    last, opening = None, None
    rounds_of = {}
    for rows, _, _ in rounds:
        for r in rows:
            rounds_of[r] = rounds_of.get(r, 0) + 1
    for call in range(calls):
        pos, req = PositionAcceptance(max_gamma), RequestAcceptance(prior_strength=strength)
        if last is not None:
            pos.carry(last[0], 8.0)
            req.carry(last[1], last[0].alpha)
        for k, (rows, acc, gamma) in enumerate(rounds):
            ratios = req.ratios(rows, pos.alpha)
            p = req.row_tokens(pos.per_position(gamma), ratios)[:, gamma]
            a = np.asarray(acc, dtype=float) + 1.0
            if k == 0 and call == calls - 1:
                # Before any round of the call: the rounds each row is expected to need (tokens it commits over
                # expected tokens per round), slowest first, against how many each request took.
                committed = {r: 0.0 for r in rows}
                for rr, aa, _ in rounds:
                    for r, x in zip(rr, aa):
                        committed[r] += x + 1
                opening = (sorted((committed[r] / e for r, e in zip(rows, p)), reverse=True),
                           sorted(rounds_of.values(), reverse=True))
            if call == calls - 1:
                pred += p.tolist()
                actual += a.tolist()
                if len(rows) >= 2:  # the half of the rows predicted slowest, and the other half
                    order = np.argsort(p, kind="stable")
                    half = len(rows) // 2
                    low_pred += p[order[:half]].tolist()
                    low_actual += a[order[:half]].tolist()
                    high_pred += p[order[-half:]].tolist()
                    high_actual += a[order[-half:]].tolist()
            pos.record(acc, [gamma] * len(acc))
            req.record(rows, acc, [gamma] * len(acc))
        last = (pos, req)
    err = np.asarray(pred) - np.asarray(actual)
    return {"rms_error": float(np.sqrt(np.mean(err ** 2))), "bias": float(np.mean(err)),
            "slow_half": (float(np.mean(low_pred)), float(np.mean(low_actual))) if low_pred else None,
            "fast_half": (float(np.mean(high_pred)), float(np.mean(high_actual))) if high_pred else None,
            "row_rounds": len(pred), "opening": opening}


def calibrate(where: str, gamma: int, calls: int, max_new: int, strengths: list[float]) -> None:
    rounds, batch = record_rounds(where, gamma, max_new)
    per_request: dict[int, list[int]] = {}
    for rows, acc, _ in rounds:
        for r, a in zip(rows, acc):
            per_request.setdefault(r, []).append(a + 1)
    print(f"{where} gamma {gamma}: {len(rounds)} rounds; tokens per round by request: "
          + ", ".join(f"{r}: {np.mean(v):.2f} over {len(v)}" for r, v in sorted(per_request.items())))
    print(f"replayed over {calls} calls, the last call scored (expected tokens per round vs committed):")
    for s in strengths:
        out = replay(rounds, calls, gamma, s)
        halves = ""
        if out["slow_half"]:
            halves = (f"; rows predicted slowest half: expected {out['slow_half'][0]:.2f}, committed "
                      f"{out['slow_half'][1]:.2f}; fastest half: {out['fast_half'][0]:.2f} vs "
                      f"{out['fast_half'][1]:.2f}")
        print(f"  prior strength {s:g}: rms error {out['rms_error']:.3f}, bias {out['bias']:+.3f} over "
              f"{out['row_rounds']} row-rounds{halves}")
        expected, taken = out["opening"]
        print(f"    at the call's first round, rounds per request expected (slowest first) "
              f"{', '.join(f'{x:.1f}' for x in expected[:4])}; taken {', '.join(str(x) for x in taken[:4])}")


def finish(where: str, calls: int, max_new: int, max_gamma: int) -> None:
    """How well auto predicts when a static batch ends: at every step it chose under the finish objective, the
    rest of the run it predicted for its choice (`predicted_end_s` in the trace) against what the rest took, split
    by whether the step was a round or a decode step. A ratio above 1 for rounds only is optimism that favours SD."""
    name, batch, limits = parse_cell(where, max_new)
    engines, prompts, eos = cell(name, batch, [("auto", max_gamma, True)], ModelCache())
    ratios: dict[bool, list[float]] = {False: [], True: []}
    for call in range(calls):
        res = engines["auto"].generate(prompts, limits, eos, seed=call)  # as the table's passes
        steps, trace = res.metrics["steps"], res.metrics["adaptive"]["trace"]
        left_s = np.cumsum([s["step_s"] for s in steps][::-1])[::-1]  # this step's time and every later one's
        mine: dict[bool, list[float]] = {False: [], True: []}
        for i, (t, st) in enumerate(zip(trace, steps)):
            # Left out: the merged prefill, and held steps (their entry is the step's that decided the hold).
            if t.get("predicted_end_s") and not t["held"] and not (i == 0 and st["kind"] != "decode"):
                mine[t["gamma"] > 0].append(left_s[i] / t["predicted_end_s"])
        for kind in mine:
            ratios[kind] += mine[kind]
        print(f"{where} call {call + 1}: {res.metrics['stages']['tokens_per_s']:.1f} tok/s, gammas "
              f"{res.metrics['adaptive']['gamma_histogram']}; the rest of the run measured / predicted (median): "
              + ", ".join(f"after {label} {statistics.median(mine[k]):.3f} over {len(mine[k])}"
                          for k, label in ((True, "rounds"), (False, "decode steps")) if mine[k]), flush=True)
    print(f"{where}, {calls} calls: the rest of the run measured / predicted, median (quartiles): " + "; ".join(
        f"after {label} {statistics.median(ratios[k]):.3f} ({np.quantile(ratios[k], 0.25):.3f}-"
        f"{np.quantile(ratios[k], 0.75):.3f}) over {len(ratios[k])} steps"
        for k, label in ((True, "rounds"), (False, "decode steps")) if ratios[k]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alternate", metavar="SETTING:B", help="AR and auto calls of one cell, alternating")
    ap.add_argument("--calibrate", metavar="SETTING:B", help="each request's expected vs committed tokens")
    ap.add_argument("--variant", nargs=2, metavar=("SETTING:B", "OPTION=V1,V2"),
                    help="auto with each value of a policy option, side by side with AR and the fixed gammas")
    ap.add_argument("--cold", nargs=2, metavar=("SETTING:B", "OPTION=V1,V2"),
                    help="fresh engines every call: auto with each value of a policy option, AR, the largest gamma")
    ap.add_argument("--null", metavar="SETTING:B", help="two identical AR engines and auto, paired: the noise floor")
    ap.add_argument("--finish", metavar="SETTING:B[:mixed]", help="auto's predicted vs measured end of a static batch")
    ap.add_argument("--passes", type=int, default=5, help="--variant: passes")
    ap.add_argument("--gammas", default="1,2,4,6", help="--variant: the fixed gammas (auto's maximum: the largest)")
    ap.add_argument("--calls", type=int, default=None,
                    help="calls (default: 6 alternating, 3 calibrating, 12 for --finish and --cold, 8 for --null)")
    ap.add_argument("--gamma", type=int, default=2, help="--calibrate: the fixed draft length whose rounds replay")
    ap.add_argument("--max-gamma", type=int, default=6, help="--alternate, --null, --finish: auto's maximum gamma")
    ap.add_argument("--against", type=int, default=0,
                    help="--alternate: the fixed draft length auto alternates with (0: autoregressive decoding)")
    ap.add_argument("--strengths", default="1,2,4,8,16", help="--calibrate: per-request prior strengths to score")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    a = ap.parse_args()
    if a.alternate:
        alternate(a.alternate, a.calls or 6, a.max_new_tokens, a.max_gamma, a.against)
    elif a.variant:
        variant(a.variant[0], a.variant[1], a.passes, a.max_new_tokens, [int(x) for x in a.gammas.split(",")])
    elif a.null:
        null(a.null, a.calls or 8, a.max_new_tokens, a.max_gamma)
    elif a.cold:
        cold(a.cold[0], a.cold[1], a.calls or 12, a.max_new_tokens, [int(x) for x in a.gammas.split(",")])
    elif a.finish:
        finish(a.finish, a.calls or 12, a.max_new_tokens, a.max_gamma)
    elif a.calibrate:
        calibrate(a.calibrate, a.gamma, a.calls or 3, a.max_new_tokens, [float(x) for x in a.strengths.split(",")])
    else:
        ap.error("give --alternate, --variant, --cold, --null, --finish or --calibrate")


if __name__ == "__main__":
    main()
