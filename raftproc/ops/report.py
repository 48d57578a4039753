"""report.html for a chaos run: verdicts, a summary, and one picture of the run.

The picture has three panels over one time axis: who led which term beside the
faults each node suffered; operations per second; p50 and p99 latency per second on
a log axis. Fault windows are shaded behind all three. Operations are binned per
second before anything is drawn, so the page grows with the run's length in seconds,
not with its operation count (a 5-minute run stays a few hundred KB).

The picture is drawn with matplotlib (`pip install raftproc[plots]`); without it the
page still carries the verdicts and the summary, and says what is missing.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftproc.ops import plotting

COLORS = {
    "kill": "#e4572e",
    "power": "#a23b72",
    "pause": "#f3a712",
    "stop": "#888888",
    "partition": "#2e86ab",
    "slow": "#76b041",
    "transfer": "#6a4c93",
    "member": "#17becf",
    "rolling": "#bcbd22",
}
# A process that is killed, stopped or paused leads no longer, whatever it last logged.
ENDS_LEADERSHIP = ("kill", "power", "stop", "pause")
LEADER_COLOR = "#14213d"  # navy, not black: nothing else on the page has it
LEADER_ENDS = ("became_follower", "node_stopped", "wal_recovered")
# Every panel's legend sits to the right of it, outside the plotted area.
LEGEND_BESIDE: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": 8, "frameon": False}


def leader_spans(events: list[dict[str, Any]], t1: float, faults: Sequence[dict[str, Any]] = ()) -> list[tuple[int, int, float, float]]:
    """(node, term, start, end) from became_leader to the node's next role change,
    or to the start of a kill, stop or pause of that node if one comes first."""
    spans: list[tuple[int, int, float, float]] = []
    open_: dict[int, tuple[int, float]] = {}
    for e in sorted(events, key=lambda e: e["_t"]):
        node = e["node"]
        if e["event"] == "became_leader":
            if node in open_:  # a restart the logs did not show: the old term ended here
                term, start = open_.pop(node)
                spans.append((node, term, start, e["_t"]))
            open_[node] = (e["term"], e["_t"])
        elif node in open_ and (e["event"] in LEADER_ENDS or e.get("role") not in (None, "leader")):
            term, start = open_.pop(node)
            spans.append((node, term, start, e["_t"]))
    spans += [(n, term, start, t1) for n, (term, start) in open_.items()]
    return [(n, term, start, _cut(n, start, end, faults)) for n, term, start, end in spans]


def _cut(node: int, start: float, end: float, faults: Sequence[dict[str, Any]]) -> float:
    for f in faults:
        if f["kind"] in ENDS_LEADERSHIP and node in (f["nodes"] or ()) and start <= f["start"] < end:
            end = f["start"]
    return end


@dataclass
class Seconds:
    """Operations binned by the second in which they returned (the unknown ones by
    the second they were called: they never returned)."""

    ok: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


def per_second(history: Iterable[dict[str, Any]], t0: float, t1: float) -> Seconds:
    """Whole seconds only: a last, partial second would be drawn as a fall in the
    rate that never happened, so what returned in it is left out of the series."""
    n = max(1, int(t1 - t0 + 1e-9))
    s = Seconds([0] * n, [0] * n, [0] * n)
    latencies: list[list[float]] = [[] for _ in range(n)]
    for h in history:
        if h.get("return") is None:
            i = _bin(h["call"] / 1e9 - t0, n)
            if i is not None:
                s.unknown[i] += 1
            continue
        i = _bin(h["return"] / 1e9 - t0, n)
        if i is None:
            continue
        (s.ok if h["ok"] or h.get("mismatch") else s.failed)[i] += 1
        latencies[i].append((h["return"] - h["call"]) / 1e6)
    for lat in latencies:
        lat.sort()
        s.p50_ms.append(_quantile(lat, 0.50))
        s.p99_ms.append(_quantile(lat, 0.99))
    return s


def _bin(t: float, n: int) -> int | None:
    """The second `t` falls in, or None past the last whole one."""
    return max(int(t), 0) if t < n else None


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan  # no line drawn through a second with no answers
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def draw_run(
    *, nodes: list[int], t0: float, t1: float, faults: list[dict[str, Any]], events: list[dict[str, Any]], history: Iterable[dict[str, Any]]
) -> str | None:
    """The run's picture as SVG text, or None without matplotlib."""
    if not plotting.have_matplotlib():
        return None
    plt = plotting.pyplot()
    span = max(t1 - t0, 1.0)
    fig, (lead, rate, lat) = plt.subplots(
        3, 1, sharex=True, figsize=(12, 2.2 + 0.35 * len(nodes) + 5.0), gridspec_kw={"height_ratios": [0.5 + 0.3 * len(nodes), 2.2, 2.8]}
    )
    _draw_faults(lead, (rate, lat), nodes=nodes, faults=faults, t0=t0, t1=t1)
    _draw_leaders(lead, nodes=nodes, spans=leader_spans(events, t1, faults), t0=t0, span=span)
    sec = per_second(history, t0, t1)
    _draw_throughput(rate, sec)
    _draw_latency(lat, sec, span)
    for ax in (lead, rate, lat):
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: the SVG sits inside HTML


def _draw_faults(lead: Any, shaded: tuple[Any, ...], *, nodes: list[int], faults: list[dict[str, Any]], t0: float, t1: float) -> None:
    """Each fault shaded over its window on the `shaded` panels, and on the rows of
    the nodes it struck (every node's when it names none) in the leaders' panel."""
    from matplotlib.patches import Patch

    thin = max(t1 - t0, 1.0) / 1000  # the narrowest a window is drawn, so an instant still shows
    for f in faults:
        start = f["start"] - t0
        end = (f["end"] if f["end"] is not None else t1) - t0
        color = COLORS.get(f["kind"], "#cccccc")
        for ax in shaded:
            ax.axvspan(start, max(end, start + thin), color=color, alpha=0.18, linewidth=0)
        for n in f["nodes"] or nodes:
            if n in nodes:
                row = nodes.index(n)
                lead.broken_barh([(start, max(end - start, thin))], (row - 0.4, 0.8), color=color, alpha=0.45)
    kinds = sorted({f["kind"] for f in faults})
    if kinds:
        lead.legend(handles=[Patch(color=COLORS.get(k, "#cccccc"), alpha=0.6, label=k) for k in kinds], **LEGEND_BESIDE)


def _draw_leaders(lead: Any, *, nodes: list[int], spans: list[tuple[int, int, float, float]], t0: float, span: float) -> None:
    for node, term, start, end in spans:
        if node in nodes:
            row = nodes.index(node)
            lead.broken_barh([(start - t0, max(end - start, span / 1000))], (row - 0.15, 0.3), color=LEADER_COLOR)
            lead.text(start - t0, row - 0.2, f"t{term}", fontsize=7, color=LEADER_COLOR, va="bottom")
    lead.set_yticks(range(len(nodes)), [f"node {n}" for n in nodes])
    lead.set_ylim(len(nodes) - 0.5, -0.5)
    lead.set_title("Leaders (dark bars, labelled with the term) and faults per node (shaded)", fontsize=10, loc="left")


def _draw_throughput(rate: Any, sec: Seconds) -> None:
    xs = [i + 0.5 for i in range(len(sec.ok))]
    rate.plot(xs, sec.ok, color="#2a9d8f", linewidth=1.2, label="ok")
    rate.plot(xs, sec.failed, color="#e76f51", linewidth=1.0, label="failed")
    rate.plot(xs, sec.unknown, color="#6a4c93", linewidth=1.0, linestyle=":", label="unknown outcome")
    rate.set_ylabel("operations/s")
    rate.set_ylim(bottom=0)
    rate.set_title("Throughput: operations answered per second", fontsize=10, loc="left")
    rate.legend(**LEGEND_BESIDE)
    rate.grid(True, axis="y", alpha=0.3)


def _draw_latency(lat: Any, sec: Seconds, span: float) -> None:
    xs = [i + 0.5 for i in range(len(sec.ok))]
    lat.plot(xs, sec.p50_ms, color="#264653", linewidth=1.2, label="p50")
    lat.plot(xs, sec.p99_ms, color="#e9c46a", linewidth=1.2, label="p99")
    if any(v == v for v in sec.p50_ms):  # a log axis needs one number that is not NaN
        plotting.log_y_axis(lat)
    lat.set_ylabel("latency, ms (log)")
    lat.set_title("Latency of the operations answered in each second", fontsize=10, loc="left")
    lat.legend(**LEGEND_BESIDE)
    lat.set_xlabel("seconds since the run started")
    lat.set_xlim(0, span)
    lat.grid(True, axis="y", which="major", alpha=0.3)


def write_report(
    path: Path,
    *,
    title: str,
    nodes: list[int],
    t0: float,
    t1: float,
    faults: list[dict[str, Any]],
    events: list[dict[str, Any]],
    history: Iterable[dict[str, Any]],
    verdicts: list[tuple[str, bool, str]],
    summary: list[tuple[str, Any]],
    replay: str | None = None,
) -> None:
    """`replay`: the command that plays the run's recording on the live page."""
    picture = draw_run(nodes=nodes, t0=t0, t1=t1, faults=faults, events=events, history=history)
    if picture is None:
        picture = "<p><em>No picture: matplotlib is not installed (pip install 'raftproc[plots]').</em></p>"
    spans = leader_spans(events, t1, faults)
    leader_rows = "".join(
        f"<tr><td>{term}</td><td>node {node}</td><td>{start - t0:.1f} s</td><td>{end - t0:.1f} s</td></tr>"
        for node, term, start, end in sorted(spans, key=lambda s: s[2])
    )
    verdict_rows = "".join(
        f'<tr><td>{html.escape(name)}</td><td style="color:{"green" if ok else "red"}">{"PASS" if ok else "FAIL"}</td><td><pre>{html.escape(detail)}</pre></td></tr>'
        for name, ok, detail in verdicts
    )
    summary_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in summary)
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:20px}} td{{padding:2px 10px;vertical-align:top}} pre{{margin:0;white-space:pre-wrap}}
svg{{max-width:100%;height:auto}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Verdicts</h2><table id="verdicts">{verdict_rows}</table>
{_replay_note(replay)}
<h2>The run</h2><div id="picture">{picture}</div>
<h2>Summary</h2><table id="summary">{summary_rows}</table>
<h2>Leaders</h2><table id="leaders"><tr><th>term</th><th>leader</th><th>from</th><th>until</th></tr>{leader_rows}</table>
</body></html>""",
        encoding="utf-8",
    )


def _replay_note(command: str | None) -> str:
    if command is None:
        return ""
    return (
        f'<p id="replay">Watch this run again, every election, message and fault, on the live page: '
        f"<code>{html.escape(command)}</code>, then open the address it prints.</p>"
    )
