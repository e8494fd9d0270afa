from __future__ import annotations

from moesd import render
from moesd.perf.plot import check_plot_path
from moesd.commands.flags import PAPER_BATCH_SIZES, acceptance_and_gammas, int_list, scenario_args, scenario_kw
from moesd.perf.inputs import build_scenario, context_dict
from moesd.perf.prediction import Acceptance, kv_note, predict, rows
from moesd.perf.summary import summarize


HELP = "predicted SD speedup over batch sizes and draft lengths"
EXAMPLES = 'examples:\n  moesd predict --target Qwen2-57B-A14B-Instruct --draft Qwen2-0.5B-Instruct --hardware H800 --tp 2 \\\n      --sigma 0.9 --gamma 2,3,4 --engine vllm-v0\n  moesd predict --target Qwen3-30B-A3B --hardware H100-SXM --tp 2 --draft-kind eagle \\\n      --acceptance-rate 0.55 --gamma 4 --batch-sizes 1-64 --plot speedup.svg'


def add_arguments(p) -> None:
    scenario_args(p)
    p.add_argument("--batch-sizes", type=int_list, default=int_list(PAPER_BATCH_SIZES),
                   help="batch sizes, e.g. 1-64 or 1,8,32 (default: the paper's 19, %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", help="write a figure of speedup and target efficiency vs batch size")


def run(a) -> str:
    if a.plot:
        check_plot_path(a.plot)
    acceptance, gammas = acceptance_and_gammas(a)
    return _run(scenario_kw(a), a.batch_sizes, gammas, acceptance, a.json, a.plot)


def _run(scenario_kw: dict, batch_sizes: list[int], gammas: list[int], acceptance: Acceptance,
         as_json: bool, plot: str | None) -> str:
    scenario, notes = build_scenario(**scenario_kw)
    grid = predict(scenario, batch_sizes, gammas, acceptance)
    if not acceptance.varies_with_gamma and len(set(gammas)) > 1:
        notes.append("sigma held fixed across gamma; pass --alpha (or a rate, length or curve) to choose gamma")
    if acceptance.alpha is not None and (acceptance.acceptance_rate is not None
                                         or acceptance.mean_acceptance_length is not None):
        notes.append(f"acceptance converted to alpha {acceptance.alpha:.4f} (i.i.d. per position)")
    note = kv_note(scenario, grid)
    if note:
        notes.append(note)
    summary = summarize(grid, notes)
    context = context_dict(scenario)
    context.update(acceptance.describe())
    alpha, sigma = acceptance.alpha, acceptance.sigma
    if plot:
        from moesd.perf.plot import plot_prediction

        basis = (f"unfitted prior, engine profile {context['engine']}" if context.get("engine")
                 else "fitted parameters")
        title = (f"{context['target']} + {context['draft'] or 'no draft'} on {context['hardware']} x{context['tp']}, "
                 + (f"alpha={alpha:.3g}" if alpha is not None else f"sigma={sigma}" if sigma is not None
                    else "acceptance curve") + f"\n{basis}")
        plot_prediction(grid, summary, title, plot)
    table_rows = rows(grid)
    if as_json:
        return render.to_json({"rows": table_rows, "summary": summary, "context": context})
    return render.prediction_text(table_rows, summary, context)
