"""PNG figures of predictions (matplotlib, imported lazily: it costs ~0.3 s)."""

from __future__ import annotations

import numpy as np

from moesd.atomic_io import check_writable, write_atomic
from moesd.errors import MoesdError
from moesd.perf.summary import BAND_FRACTION


PLOT_FORMATS = ("png", "svg", "pdf")


def plot_format(path) -> str:
    """The format a --plot path's extension names."""
    ext = str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
    if ext not in PLOT_FORMATS:
        raise MoesdError(f"--plot {path}: name a .png, .svg or .pdf file")
    return ext


def check_plot_path(path) -> None:
    """Before any work: a known format and a writable place."""
    plot_format(path)
    check_writable(path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_prediction(grid: dict, summary: dict, title: str, path: str) -> None:
    """Speedup vs batch size per gamma (left), target efficiency (right, dashed), peak/sqrt(2) band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.8))
    eff_ax = ax.twinx()
    b = grid["batch_size"][0]
    lines = []
    for i, gamma in enumerate(grid["gamma"][:, 0]):
        (line,) = ax.plot(b, grid["speedup"][i], marker="o", ms=3, label=f"speedup, gamma={gamma}")
        (eff,) = eff_ax.plot(b, grid["target_efficiency"][i], ls="--", color=line.get_color(), alpha=0.6,
                             label=f"target efficiency, gamma={gamma} (right axis)")
        lines.append(eff)
    ax.axhline(1.0, color="grey", lw=0.8)
    peak = summary["peak_speedup"]
    ax.axhline(peak * BAND_FRACTION, color="grey", lw=0.8, ls=":", label="peak / sqrt(2)")
    ax.set_xlabel("batch size")
    ax.set_ylabel("predicted speedup (x)")
    eff_ax.set_ylabel("target efficiency T_T(B,1)/T_T(B,verify) (dashed)")
    eff_ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + lines, labels + [x.get_label() for x in lines], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.12, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format=plot_format(path), dpi=120))
    plt.close(fig)


def plot_experts(tokens, curves: dict[str, np.ndarray], num_experts: int, title: str, path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in curves.items():
        ax.plot(tokens, values, marker="o", ms=3, label=label)
    ax.axhline(num_experts, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens through the router, t")
    ax.set_ylabel("distinct experts per layer")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format=plot_format(path), dpi=120))
    plt.close(fig)
