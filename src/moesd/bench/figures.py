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


def figure(path: Path, draw, ncols: int = 1, figsize=(8, 4.8), **kw) -> str:
    """A figure with a grid, drawn by `draw(fig, ax_or_axes)`, then saved."""
    fig, axes = pyplot().subplots(1, ncols, figsize=figsize, **kw)
    draw(fig, axes)
    for ax in (axes if ncols > 1 else [axes]):
        ax.grid(alpha=0.3)
    return save(fig, path)


def batch_axis(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
