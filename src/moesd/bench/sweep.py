"""`moesd bench`: sweep batch size x draft length x sparsity x temperature x routing, measure each point
(warm-up, repeats, medians and IQRs of every stage), and write one JSON line per point as it completes.

Each point runs the autoregressive baseline (gamma 0) and speculative decoding through the same engine,
on the same prompts, at the same batch size; the end-to-end speedup is the ratio of their time per
generated token, prefill included (SD merges the target prefill into its first round).
"""

from __future__ import annotations

import datetime
import itertools
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from moesd.bench.machine import cpu_description
from moesd.bench.record import BenchRecord
from moesd.bench.results_file import ResultsFile
from moesd.bench.workloads import batch_prompts, length_stats, load_workload, tokenize_prompts
from moesd.errors import MoesdError

@dataclass(frozen=True)
class BenchConfig:
    target: str
    workload: str
    batch_sizes: tuple[int, ...]
    gammas: tuple[int, ...]
    draft: str | None = None
    draft_method: str | None = None
    alpha: float | None = None  # synthetic acceptance
    experts_per_token: tuple[int | None, ...] = (None,)
    temperatures: tuple[float, ...] = (0.0,)
    routings: tuple[str, ...] = ("model",)
    repeats: int = 3
    warmup: int = 1
    max_new_tokens: int = 32
    max_prompt_tokens: int | None = None
    dtype: str = "bf16"
    device: str = "cpu"
    seed: int = 0
    experts_implementation: str = "grouped_mm"
    kv_cache: str = "static"
    cuda_graphs: bool = False
    chat: bool = False
    upcycle_experts: int | None = None  # dense target -> MoE twin with this many experts
    hardware: str | None = None  # recorded for `moesd fit`
    tokenizer: str | None = None
    expert_budgets: tuple[int | None, ...] = (None,)  # MoE-Spec C per point; None = unbudgeted reference
    budget_mode: str = "substitution"
    budget_scope: str = "batch"
    execute_code: bool = False  # HumanEval pass@1 per budget (runs generated code in a subprocess)
    auto_gamma: bool = False  # one more series: `--gamma auto` with the largest gamma as its maximum

    @property
    def budgeted(self) -> bool:
        return any(b is not None for b in self.expert_budgets)

    def identity(self) -> dict:
        """What makes two measurements comparable (the point coordinates are added per point)."""
        keep = ("target", "workload", "draft", "draft_method", "alpha", "max_new_tokens", "max_prompt_tokens",
                "dtype", "device", "seed", "experts_implementation", "chat", "upcycle_experts", "tokenizer")
        if self.budgeted:  # budget sweeps time SD with a separate prefill, so they are their own series
            keep += ("budget_mode", "budget_scope")
        return {k: getattr(self, k) for k in keep}


@dataclass(frozen=True)
class Point:
    batch_size: int
    gamma: int
    experts_per_token: int | None
    temperature: float
    routing: str
    expert_budget: int | None = None
    adaptive: bool = False  # gamma is then the maximum of `--gamma auto`


def points(cfg: BenchConfig) -> list[Point]:
    # K and routing outermost: the target is reloaded only when K changes. Budgets innermost, after
    # the unbudgeted reference they are compared with. The auto series after the fixed gammas of each B.
    budgets = sorted(cfg.expert_budgets, key=lambda c: -1 if c is None else c)
    out = []
    for k, r, t, b in itertools.product(cfg.experts_per_token, cfg.routings, cfg.temperatures, cfg.batch_sizes):
        out += [Point(b, g, k, t, r, c) for g, c in itertools.product(cfg.gammas, budgets)]
        if cfg.auto_gamma:
            out.append(Point(b, max(cfg.gammas), k, t, r, None, adaptive=True))
    return out


def point_key(cfg: BenchConfig, p: Point) -> str:
    coords = asdict(p)
    if not p.adaptive:
        coords.pop("adaptive")  # keys of fixed-gamma points stay as they were
    if not cfg.budgeted:
        coords.pop("expert_budget")  # keys of sweeps without budgets stay as they were
    return json.dumps({**cfg.identity(), **coords}, sort_keys=True)


def validate(cfg: BenchConfig) -> None:
    from moesd.engine.options import MAX_GAMMA, check_alpha, check_budget, check_routing, check_sampling

    if not cfg.batch_sizes or min(cfg.batch_sizes) < 1 or max(cfg.batch_sizes) > 4096:
        raise MoesdError("batch sizes must lie in 1..4096")
    if cfg.max_prompt_tokens is not None and cfg.max_prompt_tokens < 1:
        raise MoesdError(f"--max-prompt-tokens must be >= 1, got {cfg.max_prompt_tokens}")
    if not cfg.gammas or min(cfg.gammas) < 1 or max(cfg.gammas) > MAX_GAMMA:
        raise MoesdError(f"gammas must lie in 1..{MAX_GAMMA} (gamma 0, the baseline, is measured at every point)")
    if cfg.repeats < 1 or cfg.warmup < 0:
        raise MoesdError("need --repeats >= 1 and --warmup >= 0")
    if cfg.max_new_tokens < 2 * (max(cfg.gammas) + 1) + 1:
        # Fewer tokens can end every sequence within rounds whose draft length was shortened to fit,
        # leaving no verify step at the point's gamma to time.
        raise MoesdError(f"--max-new-tokens must be >= {2 * (max(cfg.gammas) + 1) + 1} for gamma {max(cfg.gammas)}")
    for t in cfg.temperatures:
        check_sampling(t, 1.0)
    for r in cfg.routings:
        check_routing(r)
    for c in cfg.expert_budgets:
        check_budget(c, cfg.budget_mode, cfg.budget_scope)
    if cfg.auto_gamma and cfg.budgeted:
        raise MoesdError("--gammas auto prices lossless rounds; it does not combine with --expert-budgets")
    if cfg.execute_code and cfg.workload != "humaneval":
        raise MoesdError("--execute-code scores HumanEval completions; use --workload humaneval")
    method = cfg.draft_method or ("model" if cfg.draft else None)
    if method is None or method == "none":
        raise MoesdError("a sweep needs a draft: --draft, --draft-method ngram or --draft-method synthetic --alpha A")
    if method == "synthetic":
        check_alpha(cfg.alpha)


def engine_spec(cfg: BenchConfig, p: Point, gamma: int, budget: int | None = None):
    """The engine for one point: gamma 0 is the autoregressive baseline (no draft)."""
    from moesd.engine.factory import EngineSpec

    draft = dict(draft=cfg.draft, draft_method=cfg.draft_method or "model", alpha=cfg.alpha,
                 adaptive_gamma=p.adaptive) if gamma > 0 else dict(draft_method="none")
    return EngineSpec(target=cfg.target, gamma=gamma, temperature=p.temperature, seed=cfg.seed, device=cfg.device,
                      dtype=cfg.dtype, experts_per_token=p.experts_per_token,
                      experts_implementation=cfg.experts_implementation, routing=p.routing, tokenizer=cfg.tokenizer,
                      upcycle_experts=cfg.upcycle_experts, expert_budget=budget, budget_mode=cfg.budget_mode,
                      budget_scope=cfg.budget_scope, merge_prefill=not cfg.budgeted, kv_cache=cfg.kv_cache,
                      cuda_graphs=cfg.cuda_graphs, **draft)


def conditions(cfg: BenchConfig, target, prompt_stats: dict) -> dict:
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": cfg.device,
        "device_name": torch.cuda.get_device_name() if cfg.device == "cuda" else cpu_description(),
        "torch_threads": torch.get_num_threads(),
        "dtype": cfg.dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "experts_implementation": target.experts_implementation,
        "kv_cache": cfg.kv_cache,
        "cuda_graphs": cfg.cuda_graphs,
        "seed": cfg.seed,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "max_new_tokens": cfg.max_new_tokens,
        "workload": cfg.workload,
        **{f"prompt_{k}": v for k, v in prompt_stats.items()},
    }


def _q(values, q):
    return float(np.percentile(values, q)) if len(values) else None


def _stage(results, key):
    vals = [r.stages[key] for r in results if key in r.stages]
    return (float(np.median(vals)), [_q(vals, 25), _q(vals, 75)]) if vals else (None, None)


def _distinct_at(results, phase: str, tokens: int) -> float | None:
    per_run = [np.mean(v) for v in (r.experts.distinct_at(phase, tokens) for r in results) if v]
    return float(np.mean(per_run)) if per_run else None


def summarize_point(ar: list, sd: list, gamma: int, adaptive: bool = False) -> dict:
    """A point's measured fields from its autoregressive and SD `GenerationResult`s; `adaptive`: gamma is the
    maximum of `--gamma auto`, whose choices are recorded instead of a per-gamma expert count."""
    from moesd.engine import phases
    from moesd.perf.acceptance_counts import AcceptanceCounts

    ar_t = np.array([r.seconds_per_token for r in ar])
    sd_t = np.array([r.seconds_per_token for r in sd])
    ratios = (ar_t[:, None] / sd_t[None, :]).ravel()  # every AR repeat against every SD repeat
    counts = AcceptanceCounts.total(r.acceptance for r in sd)
    out = {
        "speedup": float(np.median(ar_t) / np.median(sd_t)),
        "speedup_iqr": [_q(ratios, 25), _q(ratios, 75)],
        "ar_tokens_per_s": float(1.0 / np.median(ar_t)),
        "sd_tokens_per_s": float(1.0 / np.median(sd_t)),
        **{k: v for k, v in counts.to_dict(gamma).items()},
    }
    out["target_decode_s"], out["target_decode_s_iqr"] = _stage(ar, "target_decode_s")
    out["target_verify_s"], out["target_verify_s_iqr"] = _stage(sd, "target_verify_s")
    out["draft_s"], out["draft_s_iqr"] = _stage(sd, "draft_token_s")
    out["reject_s"], out["reject_s_iqr"] = _stage(sd, "reject_s")
    out["outside_forward_fraction"] = float(np.median([r.stages["outside_forward_fraction"] for r in sd]))
    if adaptive:
        hist: dict[str, int] = {}
        for r in sd:
            for g, n in r.metrics["adaptive"]["gamma_histogram"].items():
                hist[g] = hist.get(g, 0) + n
        steps = sum(hist.values())
        out.update(gamma_policy="auto", gamma_histogram=hist,
                   mean_gamma=sum(int(g) * n for g, n in hist.items()) / steps if steps else 0.0,
                   decision_us_per_step=float(np.median([r.metrics["adaptive"]["decision_us_per_step"] for r in sd])))
    if sd[0].experts is not None:
        # Rows finish at different steps, so later forwards run with fewer rows: take the experts at
        # this point's own token counts, B for decode and B (gamma + 1) for verify.
        b = len(sd[0].token_ids)
        out["active_experts_decode"] = _distinct_at(ar, phases.DECODE, b)
        out["active_experts_verify"] = None if adaptive else _distinct_at(sd, phases.VERIFY, b * (gamma + 1))
        curve: dict[int, list[float]] = {}
        for r in ar + sd:
            for t, d in r.experts.routing_curve()["points"]:
                curve.setdefault(int(t), []).append(d)
        out["routing_curve"] = [[t, float(np.mean(v))] for t, v in sorted(curve.items())]
    return out


def _runs(engine, prompts, cfg: BenchConfig, eos, count: int, seed0: int) -> list:
    return [engine.generate(prompts, cfg.max_new_tokens, eos, seed=seed0 + r) for r in range(count)]


def _quality(cfg: BenchConfig, models, p: Point, prompts, eos, budget, references) -> dict:
    """Untimed quality runs: the unbudgeted reference once per (B, gamma, K, T, routing), then this
    point's budget (with KL to the unbudgeted target on its verify tokens)."""
    from moesd.bench.budget_quality import compare, quality_run

    def run(c):
        q = quality_run(engine_spec(cfg, p, p.gamma, c), models, prompts, cfg.max_new_tokens, eos)
        if cfg.execute_code:
            from moesd.bench.humaneval_exec import pass_at_1

            tok = models.target(engine_spec(cfg, p, 0)).tokenizer
            texts = [tok.decode(ids, skip_special_tokens=True) for ids in q["token_ids"]]
            q["pass_at_1"] = pass_at_1(texts)["pass_at_1"]
        return q

    ref_key = (p.batch_size, p.gamma, p.experts_per_token, p.temperature, p.routing)
    if ref_key not in references:
        references[ref_key] = run(None)
    return compare(references[ref_key], run(budget) if budget is not None else references[ref_key], p.temperature)


def identity_of_key(key: str) -> dict:
    """The settings part of a point key (its coordinates removed)."""
    coords = {f for f in Point.__dataclass_fields__}
    try:
        return {k: v for k, v in json.loads(key).items() if k not in coords}
    except (ValueError, AttributeError, TypeError):
        return {}


def _check_same_series(cfg: BenchConfig, results: ResultsFile, append: bool) -> None:
    """A resume continues the series in the file; other settings would silently become a second series that
    `report` and `fit` read as one, so they need an explicit --append."""
    mine = json.loads(json.dumps(cfg.identity()))
    for r in results.records:
        theirs = identity_of_key(r.key or "")
        if theirs != mine and not append:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in diff[:3])
            raise MoesdError(f"{results.path} holds a sweep with other settings ({shown}): --append adds this one as "
                             f"a second series, or choose another -o")


def run_sweep(cfg: BenchConfig, output: str, resume: bool = False, skip_bad_lines: bool = False,
              progress=None, append: bool = False, quiet: bool = False) -> ResultsFile:
    progress = progress or sys.stderr  # resolved now: a default bound at import would outlive a replaced stderr
    validate(cfg)
    results = ResultsFile(output, resume or append, skip_bad_lines)
    try:
        _check_same_series(cfg, results, append)
        return _sweep(cfg, results, output, progress, quiet)
    finally:
        results.close()


def _sweep(cfg: BenchConfig, results: ResultsFile, output: str, progress, quiet: bool = False) -> ResultsFile:
    from moesd.progress import progress as bar
    from moesd.engine.factory import ModelCache, build_engine

    if results.skipped_lines:
        print(f"skipped corrupt lines {results.skipped_lines} of {output}", file=progress)
    workload = load_workload(cfg.workload)
    todo = [p for p in points(cfg) if not results.has(point_key(cfg, p))]
    done_before = len(points(cfg)) - len(todo)
    if done_before:
        print(f"resuming: {done_before} of {len(points(cfg))} points already in {output}", file=progress)
    models = ModelCache()
    baselines: dict[tuple, list] = {}
    references: dict[tuple, dict] = {}  # unbudgeted quality runs, per point without its budget
    started = time.perf_counter()
    meter = bar(total=len(todo), desc="bench", unit="point", quiet=quiet)
    for i, p in enumerate(todo, start=1):
        target = models.target(engine_spec(cfg, p, 0))
        eos = getattr(target.tokenizer, "eos_token_id", None)
        prompts = tokenize_prompts(target.tokenizer, batch_prompts(workload, p.batch_size), cfg.chat, cfg.max_prompt_tokens)
        if any(t >= target.vocab_size or t < 0 for ids in prompts for t in ids):
            raise MoesdError(f"workload tokens fall outside the target's vocabulary of {target.vocab_size}")
        base_key = (p.batch_size, p.experts_per_token, p.temperature, p.routing)
        if base_key not in baselines:
            ar = build_engine(engine_spec(cfg, p, 0), models)
            _runs(ar, prompts, cfg, eos, cfg.warmup, cfg.seed + 10_000)
            baselines[base_key] = _runs(ar, prompts, cfg, eos, cfg.repeats, cfg.seed)
        budget = None if p.expert_budget is None else min(p.expert_budget, target.num_experts)
        sd = build_engine(engine_spec(cfg, p, p.gamma, budget), models)
        _runs(sd, prompts, cfg, eos, cfg.warmup, cfg.seed + 10_000)
        sd_runs = _runs(sd, prompts, cfg, eos, cfg.repeats, cfg.seed)  # each run starts a fresh proposer
        record = BenchRecord(
            key=point_key(cfg, p), target=cfg.target, draft=cfg.draft, draft_method=cfg.draft_method or "model",
            hardware=cfg.hardware, tp=1, batch_size=p.batch_size, gamma=p.gamma, experts_per_token=target.top_k,
            temperature=p.temperature, routing=p.routing if target.is_moe else None, expert_budget=p.expert_budget,
            num_experts=target.num_experts, synthetic_alpha=cfg.alpha,
            **summarize_point(baselines[base_key], sd_runs, p.gamma, p.adaptive),
            conditions=conditions(cfg, target, length_stats(prompts)),
        )
        if cfg.budgeted:
            record.budget_mode, record.budget_scope = cfg.budget_mode, cfg.budget_scope
            record.quality = _quality(cfg, models, p, prompts, eos, budget, references)
        results.add(record)
        elapsed = time.perf_counter() - started
        eta = elapsed / i * (len(todo) - i)
        budget_note = ""
        if cfg.budgeted:
            q = record.quality
            budget_note = (f" C={p.expert_budget or 'none'}: experts {record.active_experts_verify or 0:.1f}, "
                           f"KL {q.get('mean_kl_per_token') or 0:.4f}, match {q.get('token_match_rate', float('nan')):.3f}")
        print(f"[{done_before + i}/{len(points(cfg))}] B={p.batch_size} gamma={record.gamma_label} "
              f"K={record.experts_per_token} "
              f"T={p.temperature} {record.routing or 'dense'}{budget_note}: speedup {record.speedup:.2f} "
              f"(alpha {record.alpha:.2f}) | {elapsed:.0f} s elapsed, ETA {eta:.0f} s", file=progress, flush=True)
        meter.update(1)
    meter.close()
    return results
