"""Plain-text tables and JSON for the command line (display units are converted only here)."""

from __future__ import annotations

import json

import numpy as np


def to_json(obj, indent: int | None = 2) -> str:
    """JSON text ending in a newline; `indent=None` gives one line (a JSONL record)."""
    def default(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o)}")

    return json.dumps(obj, indent=indent, default=default, allow_nan=False) + "\n"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        if v == 0 or (1e-3 <= abs(v) < 1e5):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def _ranges(intervals: list[list[int]]) -> str:
    if not intervals:
        return "none"
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in intervals)


def prediction_text(rows: list[dict], summary: dict, context: dict) -> str:
    headers = ["B", "gamma", "N_decode", "N_verify", "T_T(B,1) ms", "T_T(B,verify) ms", "T_D ms", "T_rej ms",
               "target_eff", "sigma", "speedup"]
    body = [[r["batch_size"], r["gamma"], r["active_experts_decode"], r["active_experts_verify"],
             1e3 * r["target_decode_s"], 1e3 * r["target_verify_s"], 1e3 * r["draft_s"], 1e3 * r["reject_s"],
             r["target_efficiency"], r["sigma"], r["speedup"]] for r in rows]
    out = [f"target {context['target']} (E={context['num_experts']}, K={context['experts_per_token']}), "
           f"draft {context['draft'] or 'none'}, hardware {context['hardware']} x{context['tp']}"
           f"{' EP' + str(context['ep']) if context['ep'] > 1 else ''}, verify tokens per sequence: "
           f"{'gamma+1' if context['verify_convention'] == 'engine' else 'gamma (paper)'}",
           table(headers, body)]
    out.append(summary_text(summary))
    return "\n".join(out)


def summary_text(summary: dict) -> str:
    lines = [f"peak speedup {summary['peak_speedup']:.2f}x at batch size {summary['peak_batch_size']}, "
             f"gamma {summary['peak_gamma']}",
             f"SD pays (speedup >= 1, best gamma) at batch sizes: {_ranges(summary['beneficial_batch_sizes'])}"]
    for gamma, s in summary["per_gamma"].items():
        lines.append(f"  gamma {gamma}: peak {s['peak_speedup']:.2f}x at B={s['peak_batch_size']}; "
                     f">= 1 at {_ranges(s['beneficial_batch_sizes'])}; "
                     f">= peak/sqrt(2) at {_ranges(s['band_batch_sizes'])}")
    best = summary["best_gamma"]
    lines.append("best gamma per batch size: " + ", ".join(f"B={e['batch_size']}:{e['gamma']}" for e in best))
    lines += [f"note: {n}" for n in summary.get("notes", [])]
    return "\n".join(lines) + "\n"


def experts_text(rows: list[dict], num_experts: int, top_k: int, tau: float, threshold: int) -> str:
    headers = ["tokens", "N(t) iid"] + (["N(t) measured"] if "measured_active_experts" in rows[0] else []) + [
        "tokens/expert"]
    body = []
    for r in rows:
        line = [r["tokens"], r["active_experts"]]
        if "measured_active_experts" in r:
            line.append(r["measured_active_experts"])
        line.append(r["tokens_per_expert"])
        body.append(line)
    return (f"E={num_experts}, K={top_k}, rho={top_k / num_experts:.4g}\n" + table(headers, body)
            + f"T_thres (N >= {tau:g} E, Eq. 9): {threshold} tokens\n")


def presets_text(models: list[dict], hardware: list[dict]) -> str:
    mh = ["model", "family", "layers", "E", "K", "total (B)", "active (B)", "active excl. input emb (B)",
          "bytes/param"]
    mb = [[m["name"], m["family"], m["num_layers"], m["num_experts"], m["experts_per_token"],
           m["total_params"] / 1e9, m["active_params"] / 1e9, m["active_params_excl_input_embedding"] / 1e9,
           m["bytes_per_param"]] for m in models]
    hh = ["hardware", "GB/s", "bf16 TFLOPS", "ridge FLOP/B", "memory GiB", "link GB/s"]
    hb = [[h["name"], h["memory_bandwidth_bytes_per_s"] / 1e9, h["peak_bf16_flops_per_s"] / 1e12,
           h["ridge_point_flops_per_byte"], h["memory_bytes"] / 2**30,
           h["interconnect_bytes_per_s"] / 1e9 if h.get("interconnect_bytes_per_s") else "-"] for h in hardware]
    return table(mh, mb) + "\n" + table(hh, hb)


def fit_text(result: dict) -> str:
    fit = result["fit"]
    lines = [f"fitted {fit['n_points']} measurements in {1e3 * fit['elapsed_s']:.1f} ms "
             f"({'converged' if fit['converged'] else 'NOT converged'}: {fit['message']})",
             f"speedup RMSE {fit['rmse_speedup']:.4f}; |error| median {fit['median_abs_pct_error']:.2f} %, "
             f"max {fit['max_abs_pct_error']:.2f} %"]
    for name, ho in result.get("held_out", {}).items():
        if "median_abs_pct_error" in ho:
            lines.append(f"held-out ({name}): |error| median {ho['median_abs_pct_error']:.2f} %, "
                         f"max {ho['max_abs_pct_error']:.2f} % over {ho.get('n_points', ho.get('folds'))} "
                         f"{'points' if 'n_points' in ho else 'folds'}")
        else:
            lines.append(f"held-out ({name}): {ho.get('note', 'n/a')}")
    lines += [f"note: {n}" for n in result.get("notes", [])]
    headers = ["parameter", "value", "free"]
    free = set(fit["free_parameters"])
    if free and not free & set(result["params"]):  # a few-point fit frees fixed costs, not Algorithm 1's names
        headers[2] = "fitted"
        lines.append("fitted on the prior: " + ", ".join(fit["free_parameters"]))
        free = set()
    body = [[k, float(v), "yes" if k in free else ("prior + fit" if headers[2] == "fitted" else "pinned")]
            for k, v in result["params"].items()]
    return "\n".join(lines) + "\n" + table(headers, body)


def config_json(config: dict) -> str:
    """Indented JSON with every innermost list of numbers on one line ([1, 16, 3] rows stay readable)."""
    import re

    text = to_json(config)
    return re.sub(r"\[\s*([-0-9.eE]+(?:,\s*[-0-9.eE]+)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def vllm_schedule_json(config: dict) -> str:
    """vLLM's table with one [start, end, K] row per line, as its docs print it."""
    key = "num_speculative_tokens_per_batch_size"
    body = ",\n".join(f"    {json.dumps(r)}" for r in config[key])
    return f'{{\n  "{key}": [\n{body}\n  ]\n}}\n'


def import_text(points: list[dict]) -> str:
    rows = [[p["batch_size"], p["gamma"], p["mean_acceptance_length"], p.get("alpha", "-"),
             p["sd_tpot_s"] * 1e3 if "sd_tpot_s" in p else "-",
             p["baseline_tpot_s"] * 1e3 if "baseline_tpot_s" in p else "-", p.get("speedup", "-")] for p in points]
    return table(["batch", "gamma", "mean acc. length", "alpha", "SD TPOT ms", "no-SD TPOT ms", "speedup"], rows)


def schedule_text(rows: list[list[int]]) -> str:
    return table(["batch from", "batch to", "gamma (0 = no SD)"], rows)




def generation_text(outputs: list[dict], metrics: dict) -> str:
    lines = []
    if "note" in metrics:
        lines.append(f"NOTE: {metrics['note']}")
    for i, o in enumerate(outputs):
        lines.append(f"--- [{i}] ({len(o['token_ids'])} tokens, {o['finish_reason']})")
        lines.append(o["text"])
    st, t = metrics.get("stages", {}), metrics["target"]
    lines.append("---")
    lines.append(f"target {t['name']} ({t['dtype']}, {t['device']}"
                 + (f", E={t['num_experts']} K={t['top_k']} {t['experts_implementation']}, routing {t['routing']}"
                    if t["num_experts"] > 1 else "") + f"), draft: {metrics['draft_method']}, gamma {metrics['gamma']}, "
                 f"batch {metrics['batch_size']}, temperature {metrics['temperature']}")
    if st:
        lines.append(f"{st['tokens']} tokens in {st['generation_s']:.2f} s incl. prefill ({st['tokens_per_s']:.1f} tok/s); "
                     f"time outside model forwards {100 * st['outside_forward_fraction']:.1f} %")
        stage = [f"{k} {1e3 * st[k]:.2f} ms" for k in ("target_decode_s", "target_verify_s", "draft_round_s", "reject_s")
                 if k in st]
        if stage:
            lines.append(f"median at batch {st['full_batch_size']}: " + ", ".join(stage))
    if "acceptance" in metrics:
        a = metrics["acceptance"]
        lines.append(f"alpha {a['alpha']:.3f} (acceptance rate {a['acceptance_rate']:.3f}), "
                     f"mean acceptance length {a['mean_acceptance_length']:.2f} "
                     f"(bonus token included), sigma {a['sigma']:.3f}, per position "
                     + " ".join(f"{x:.2f}" for x in a["per_position_acceptance"]))
    if "budget" in metrics:
        b = metrics["budget"]
        kl = "" if b["mean_kl_per_token"] is None else \
            f"; mean KL(full || budgeted) {b['mean_kl_per_token']:.4f} nats over {b['kl_tokens']} verify tokens"
        lines.append(f"expert budget C={b['budget']} ({b['mode']}, {b['scope']}, {b['ranking']} ranking) in verify: "
                     f"NOT lossless{kl}")
    if "experts" in metrics:
        for phase, e in metrics["experts"]["phases"].items():
            lines.append(f"experts [{phase}]: {e['mean_distinct_experts_per_layer']:.1f} distinct per layer for "
                         f"{e['mean_tokens']:.1f} tokens ({e['mean_tokens_per_active_expert']:.2f} tokens per active expert)")
    return "\n".join(lines) + "\n"
