"""The bench's picture: throughput against p99 latency, one line per system, cluster
size and value size, each point the median of its runs with min-max bars both ways.

Drawn with matplotlib, an optional extra (`pip install raftproc[plots]`): the bench
still writes its table and JSON without it. Replot a stored run with
`python -m raftproc.ops.benchplot docs/bench.json docs/bench.svg`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from raftproc.ops import plotting
from raftproc.ops.bench.points import Point

# Systems that do not fsync before answering: their curves are not like for like.
NO_FSYNC = {"pysyncobj": "PySyncObj (no fsync)"}


def series_label(system: str, nodes: int, size: int) -> str:
    name = NO_FSYNC.get(system, system)
    return f"{name}, {nodes} nodes, {size} B"


def closed_loop_series(points: list[Point]) -> dict[tuple[str, int, int], list[Point]]:
    """Closed-loop points by (system, nodes, value size), in order of load. Open-loop
    points are in the table; on these curves they would be a second x for the same load."""
    series: dict[tuple[str, int, int], list[Point]] = {}
    for p in points:
        if p.rate or not p.runs:
            continue
        x, y = p.median("ops_per_s"), p.median("p99_ms")
        if x == x and y == y and x > 0 and y > 0:
            series.setdefault((p.system, p.nodes, p.value_size), []).append(p)
    for pts in series.values():
        pts.sort(key=lambda p: p.inflight)
    return dict(sorted(series.items()))


def write_plot(path: Path, points: list[Point], *, title: str = "") -> bool:
    """Write the plot (format from the suffix: .svg or .png); False when matplotlib
    is not installed, so the caller can say so instead of failing the run."""
    if not plotting.have_matplotlib():
        return False
    plt = plotting.pyplot()
    series = closed_loop_series(points)
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=100)
    colors = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    for i, ((system, nodes, size), pts) in enumerate(series.items()):
        color = colors(i % colors.N)
        xs = [p.median("ops_per_s") for p in pts]
        ys = [p.median("p99_ms") for p in pts]
        x_lo, x_hi = zip(*(p.span("ops_per_s") for p in pts), strict=True)
        y_lo, y_hi = zip(*(p.span("p99_ms") for p in pts), strict=True)
        ax.errorbar(
            xs,
            ys,
            xerr=[[x - lo for x, lo in zip(xs, x_lo, strict=True)], [hi - x for x, hi in zip(xs, x_hi, strict=True)]],
            yerr=[[y - lo for y, lo in zip(ys, y_lo, strict=True)], [hi - y for y, hi in zip(ys, y_hi, strict=True)]],
            color=color,
            marker="o",
            markersize=4,
            linewidth=1.6,
            capsize=2,
            elinewidth=0.8,
            linestyle="--" if system in NO_FSYNC else "-",
            label=series_label(system, nodes, size),
        )
        # The load of the last point says how far the curve was pushed.
        ax.annotate(f"{pts[-1].inflight} in flight", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    plotting.log_y_axis(ax)
    ax.set_xlabel("throughput, ops/s (median of runs; bars: min to max)")
    ax.set_ylabel("p99 latency, ms (log scale)")
    ax.set_title(title or "Throughput against p99 latency (closed loop; more requests in flight to the right)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    ax.set_xlim(left=0)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
    return True


def points_from_json(data: dict[str, Any]) -> list[Point]:
    return [Point(**{k: v for k, v in d.items() if k != "median"}) for d in data["points"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", type=Path, help="a bench run's JSON (scripts/bench.py --out)")
    ap.add_argument("out", type=Path, help="the picture to write (.svg or .png)")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    if not write_plot(args.out, points_from_json(json.loads(args.json.read_text())), title=args.title):
        print("matplotlib is not installed: pip install 'raftproc[plots]'", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
