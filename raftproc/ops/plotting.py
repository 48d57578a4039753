"""What the bench plot and the chaos report share: matplotlib, when installed (the
optional `plots` extra; a node never draws), set up the same way for both."""

from __future__ import annotations

from typing import Any


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot() -> Any:
    """pyplot on the Agg backend: no display, same output on every machine."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable
    matplotlib.rcParams["svg.hashsalt"] = "raftproc"  # stable ids: a replot diffs cleanly
    import matplotlib.pyplot as plt

    return plt


def log_y_axis(ax: Any) -> None:
    """A log y axis labelled with plain numbers at 1-2-5 steps: "20" reads faster than "2x10^1"."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
