"""report.html for a chaos run: who led in which term, the fault windows, and
operation latencies, as inline SVG (opens in a browser with no network)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

WIDTH, ROW, LEFT = 1100, 26, 90
COLORS = {"kill": "#e4572e", "power": "#a23b72", "pause": "#f3a712", "stop": "#888", "partition": "#2e86ab", "slow": "#76b041"}


def leader_spans(events: list[dict[str, Any]], t0: float, t1: float) -> list[tuple[int, int, float, float]]:
    """(node, term, start, end) from became_leader and the node's next role change."""
    spans: list[tuple[int, int, float, float]] = []
    open_: dict[int, tuple[int, float]] = {}
    for e in sorted(events, key=lambda e: e["_t"]):
        node = e["node"]
        if e["event"] == "became_leader":
            open_[node] = (e["term"], e["_t"])
        elif node in open_ and (e["event"] in ("became_follower", "node_stopped", "wal_recovered") or e.get("role") not in (None, "leader")):
            term, start = open_.pop(node)
            spans.append((node, term, start, e["_t"]))
    spans += [(n, term, start, t1) for n, (term, start) in open_.items()]
    return spans


def write_report(path: Path, *, title: str, nodes: list[int], t0: float, t1: float, faults: list[dict[str, Any]],
                 events: list[dict[str, Any]], history: list[dict[str, Any]], verdicts: list[tuple[str, bool, str]],
                 summary: list[tuple[str, Any]]) -> None:
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return LEFT + (WIDTH - LEFT - 10) * (t - t0) / span

    rows = len(nodes)
    tl_h = ROW * (rows + 1) + 30
    parts = [f'<svg width="{WIDTH}" height="{tl_h}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">']
    for f in faults:
        start, end = f["start"], f["end"] if f["end"] is not None else t1
        color = COLORS.get(f["kind"], "#ccc")
        for n in f["nodes"] or nodes:
            if n in nodes:
                yy = 10 + ROW * nodes.index(n)
                parts.append(f'<rect x="{x(start):.1f}" y="{yy}" width="{max(x(end) - x(start), 1):.1f}" height="{ROW - 4}" fill="{color}" opacity="0.35"><title>{html.escape(f["kind"] + " " + f["victims"] + " " + f.get("detail", ""))}</title></rect>')
    for node, term, start, end in leader_spans(events, t0, t1):
        if node in nodes:
            yy = 10 + ROW * nodes.index(node) + 6
            parts.append(f'<rect x="{x(start):.1f}" y="{yy}" width="{max(x(end) - x(start), 1):.1f}" height="{ROW - 16}" fill="#222"><title>node {node} leads term {term}</title></rect>')
            parts.append(f'<text x="{x(start) + 2:.1f}" y="{yy - 1}" fill="#222">t{term}</text>')
    for i, n in enumerate(nodes):
        parts.append(f'<text x="5" y="{10 + ROW * i + 15}">node {n}</text>')
    for s in range(0, int(span) + 1, max(1, int(span) // 10 or 1)):
        parts.append(f'<text x="{x(t0 + s):.1f}" y="{tl_h - 8}">{s}s</text>')
    parts.append("</svg>")
    timeline = "\n".join(parts)

    lat_h = 260
    done = [h for h in history if h.get("return") is not None]
    max_lat = max([(h["return"] - h["call"]) / 1e6 for h in done] or [1.0])
    pts = [f'<svg width="{WIDTH}" height="{lat_h + 30}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">']
    for h in done[:40000]:
        lat = (h["return"] - h["call"]) / 1e6
        yy = lat_h - lat_h * lat / max_lat
        color = "#2a9d8f" if h["ok"] or h.get("mismatch") else "#e76f51"
        pts.append(f'<circle cx="{x(h["call"] / 1e9):.1f}" cy="{yy:.1f}" r="1.5" fill="{color}"/>')
    for h in history:
        if h.get("return") is None:
            pts.append(f'<rect x="{x(h["call"] / 1e9):.1f}" y="0" width="2" height="6" fill="#6a4c93"/>')
    pts.append(f'<text x="5" y="12">{max_lat:.0f} ms</text><text x="5" y="{lat_h}">0 ms</text>')
    pts.append("</svg>")
    latency = "\n".join(pts)

    verdict_rows = "".join(
        f'<tr><td>{html.escape(name)}</td><td style="color:{"green" if ok else "red"}">{"PASS" if ok else "FAIL"}</td><td><pre>{html.escape(detail)}</pre></td></tr>'
        for name, ok, detail in verdicts
    )
    summary_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in summary)
    legend = " ".join(f'<span style="background:{c};opacity:.6;padding:0 6px">{k}</span>' for k, c in COLORS.items())
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:20px}} td{{padding:2px 10px;vertical-align:top}} pre{{margin:0;white-space:pre-wrap}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Verdicts</h2><table>{verdict_rows}</table>
<h2>Summary</h2><table>{summary_rows}</table>
<h2>Timeline</h2><p>Black bars: who led which term. Shaded: fault windows per node. {legend}</p>{timeline}
<h2>Operation latency</h2><p>Each dot is an operation at its call time (green: definite outcome, red: failed); purple ticks: outcome unknown.</p>{latency}
</body></html>""", encoding="utf-8")
