"""An SVG plot of throughput against p99 latency, one line per system and size."""

from __future__ import annotations

import math
from pathlib import Path

COLORS = {"raftproc": "#2a9d8f", "pysyncobj": "#e9c46a", "etcd": "#e76f51"}
W, H, PAD = 720, 420, 60


def write_plot(path: Path, points: list) -> None:
    series: dict[tuple[str, int, int], list[tuple[float, float, int]]] = {}
    for p in points:
        if getattr(p, "rate", 0):
            continue  # open-loop points are reported in the table, not on the curves
        x, y = p.median("ops_per_s"), p.median("p99_ms")
        if x == x and y == y and x > 0 and y > 0:
            series.setdefault((p.system, p.nodes, p.value_size), []).append((x, y, p.inflight))
    xs = [x for s in series.values() for x, _, _ in s] or [1.0]
    ys = [y for s in series.values() for _, y, _ in s] or [1.0]
    x_max = max(xs) * 1.1
    y_lo, y_hi = math.log10(min(ys) / 1.5), math.log10(max(ys) * 1.5)

    def px(x: float) -> float:
        return PAD + (W - 2 * PAD) * x / x_max

    def py(y: float) -> float:
        return H - PAD - (H - 2 * PAD) * (math.log10(y) - y_lo) / max(y_hi - y_lo, 1e-9)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
           f'<text x="{W / 2}" y="{H - 20}" text-anchor="middle">throughput, ops/s (median)</text>',
           f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">p99 latency, ms (log)</text>']
    for i in range(6):
        x = x_max * i / 5
        out.append(f'<text x="{px(x):.0f}" y="{H - PAD + 15}" text-anchor="middle">{x:,.0f}</text>')
    for e in range(math.floor(y_lo), math.ceil(y_hi) + 1):
        y = 10 ** e
        if y_lo <= e <= y_hi:
            out.append(f'<text x="{PAD - 5}" y="{py(y) + 4:.0f}" text-anchor="end">{y:g}</text>')
    for n, ((system, nodes, size), pts) in enumerate(sorted(series.items())):
        pts.sort(key=lambda t: t[2])
        color = COLORS.get(system, "#555")
        line = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y, _) in enumerate(pts))
        out.append(f'<path d="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y, inflight in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"><title>{system} {inflight} in flight</title></circle>')
            out.append(f'<text x="{px(x) + 4:.1f}" y="{py(y) - 4:.1f}" fill="{color}">{inflight}</text>')
        out.append(f'<text x="{W - PAD - 150}" y="{PAD + 14 * n}" fill="{color}">{system}, {nodes} nodes, {size} B</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))
