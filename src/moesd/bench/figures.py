"""Figure helpers both reports share (report.py, budget_report.py): one way to make, label and save a figure."""

from __future__ import annotations

from pathlib import Path

from moesd.atomic_io import write_atomic


def pyplot():
    from moesd.perf.plot import pyplot as _pyplot

    return _pyplot()


def save(fig, path: Path) -> str:
    """Write the figure atomically (never a half-written PNG), close it, return its file name."""
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    pyplot().close(fig)
    return path.name


def figure(path: Path, draw, ncols: int = 1, figsize=(11, 4.8), **kw) -> str:
    """A figure with a grid, drawn by `draw(fig, ax_or_axes)`, then saved. Twenty distinct colours, so more
    than ten series stay apart; legends sit outside the data (see `legend`)."""
    plt = pyplot()
    with plt.rc_context({"axes.prop_cycle": plt.cycler(color=plt.get_cmap("tab20").colors)}):
        fig, axes = plt.subplots(1, ncols, figsize=figsize, **kw)
        draw(fig, axes)
    for ax in (axes if ncols > 1 else [axes]):
        ax.grid(alpha=0.3)
    return save(fig, path)


def legend(ax) -> None:
    """Beside the axes, never over the data; smaller type for many series."""
    n = len(ax.get_legend_handles_labels()[0])
    if n:
        ax.legend(fontsize=7 if n <= 10 else 5.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def batch_axis(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    legend(ax)
