from __future__ import annotations

from moesd import render
from moesd.perf.inputs import build_scenario, context_dict
from moesd.perf.prediction import Acceptance, predict, rows
from moesd.perf.summary import summarize


def run(scenario_kw: dict, batch_sizes: list[int], gammas: list[int], alpha: float | None, sigma: float | None,
        as_json: bool, plot: str | None) -> str:
    acceptance = Acceptance(alpha=alpha, sigma=sigma)
    scenario, notes = build_scenario(**scenario_kw)
    grid = predict(scenario, batch_sizes, gammas, acceptance)
    if sigma is not None and len(set(gammas)) > 1:
        notes.append("sigma held fixed across gamma; pass --alpha to choose gamma (sigma then follows Eq. 5)")
    summary = summarize(grid, notes)
    context = context_dict(scenario)
    context.update(alpha=alpha, sigma=sigma)
    if plot:
        from moesd.perf.plot import plot_prediction

        title = (f"{context['target']} + {context['draft'] or 'no draft'} on {context['hardware']} x{context['tp']}, "
                 + (f"alpha={alpha}" if alpha is not None else f"sigma={sigma}"))
        plot_prediction(grid, summary, title, plot)
    table_rows = rows(grid)
    if as_json:
        return render.to_json({"rows": table_rows, "summary": summary, "context": context})
    return render.prediction_text(table_rows, summary, context)
