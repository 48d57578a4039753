"""The pictures: a chaos run's report.html and the bench plot, drawn with matplotlib
and looked at in headless Chromium (scripts/test installs Debian's chromium when it
runs as root and finds none)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from raftproc.ops.bench.points import Point
from raftproc.ops.benchplot import write_plot
from raftproc.ops.browser import find_chromium, screenshot
from raftproc.ops.report import COLORS, LEADER_COLOR, leader_spans, per_second, write_report

T0 = 1000.0


def need_chromium() -> None:
    if find_chromium() is None:
        if os.environ.get("RAFTPROC_SKIP_BROWSER"):
            pytest.skip("RAFTPROC_SKIP_BROWSER is set and no Chromium is installed")
        pytest.fail("no Chromium: install Debian's chromium (scripts/test does, as root) or set RAFTPROC_SKIP_BROWSER=1")


def pixels_near(png: Path, hex_color: str, *, alpha: float = 1.0, tolerance: int = 8) -> int:
    """How many pixels of the screenshot have this colour (as drawn over white at `alpha`)."""
    import numpy as np
    from matplotlib.image import imread

    rgb = imread(png)[:, :, :3] * 255
    want = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) * alpha + 255 * (1 - alpha)
    return int((np.abs(rgb - want).max(axis=2) <= tolerance).sum())


def synthetic_run(seconds: float = 300.0, ops_per_s: int = 2000, seed: int = 1):
    rng = random.Random(seed)
    t1 = T0 + seconds
    history = []
    for _ in range(int(seconds * ops_per_s)):
        call = T0 + rng.random() * seconds
        latency = rng.lognormvariate(0, 1) * 0.003
        r = rng.random()
        if r < 0.001:
            history.append({"call": int(call * 1e9), "return": None, "ok": None})
        else:
            history.append({"call": int(call * 1e9), "return": int((call + latency) * 1e9), "ok": r > 0.01})
    faults, events, t, term = [], [], T0 + 5, 1
    while t < t1 - 15:
        leader = rng.randint(1, 5)
        events.append({"node": leader, "event": "became_leader", "term": term, "_t": t, "role": "leader"})
        kind = rng.choice(["kill", "pause", "partition", "slow", "stop"])
        faults.append(
            {"kind": kind, "victims": "leader", "nodes": [leader], "detail": "", "start": t + 4, "end": t + 4 + rng.uniform(2, 6)}
        )
        events.append({"node": leader, "event": "became_follower", "term": term + 1, "_t": t + 11, "role": "follower"})
        t, term = t + rng.uniform(12, 18), term + 1
    return dict(nodes=[1, 2, 3, 4, 5], t0=T0, t1=t1, faults=faults, events=events, history=history)


def test_leader_bar_ends_where_the_leader_was_killed_or_paused():
    events = [
        {"node": 1, "event": "became_leader", "term": 2, "_t": 10.0},
        # Killed at 20; the next line it writes is at its restart, much later.
        {"node": 1, "event": "wal_recovered", "term": 2, "_t": 31.0},
        {"node": 2, "event": "became_leader", "term": 3, "_t": 22.0},
        {"node": 2, "event": "became_follower", "term": 4, "_t": 50.0, "role": "follower"},
        {"node": 3, "event": "became_leader", "term": 4, "_t": 49.0},
    ]
    faults = [
        {"kind": "kill", "nodes": [1], "start": 20.0, "end": 30.0},
        {"kind": "pause", "nodes": [2], "start": 40.0, "end": 45.0},
        {"kind": "partition", "nodes": [3], "start": 55.0, "end": 58.0},  # a partition does not end a term by itself
    ]
    spans = sorted(leader_spans(events, 60.0, faults))
    assert spans == [(1, 2, 10.0, 20.0), (2, 3, 22.0, 40.0), (3, 4, 49.0, 60.0)]
    # Without the faults the bars run on into the kill and the pause: two leaders at once.
    assert sorted(leader_spans(events, 60.0))[:2] == [(1, 2, 10.0, 31.0), (2, 3, 22.0, 50.0)]


def test_a_second_term_closes_the_first_when_the_logs_skip_the_restart():
    events = [{"node": 1, "event": "became_leader", "term": 2, "_t": 1.0}, {"node": 1, "event": "became_leader", "term": 5, "_t": 9.0}]
    assert sorted(leader_spans(events, 12.0)) == [(1, 2, 1.0, 9.0), (1, 5, 9.0, 12.0)]


def test_operations_are_binned_per_second():
    ns = 1_000_000_000
    history: list[dict[str, Any]] = [
        {"call": int(0.2 * ns), "return": int(0.3 * ns), "ok": True},  # 100 ms, second 0
        {"call": int(0.5 * ns), "return": int(1.5 * ns), "ok": False},  # 1 s, answered in second 1
        {"call": int(1.1 * ns), "return": int(1.2 * ns), "ok": True},
        {"call": int(2.5 * ns), "return": None, "ok": None},
    ]
    s = per_second(history, 0.0, 3.0)
    assert (s.ok, s.failed, s.unknown) == ([1, 1, 0], [0, 1, 0], [0, 0, 1])
    assert s.p50_ms[0] == pytest.approx(100) and s.p99_ms[1] == pytest.approx(1000)
    assert s.p50_ms[2] != s.p50_ms[2]  # no answers in second 2: a gap, not a zero


def test_a_last_partial_second_is_not_drawn_as_a_fall():
    ns = 1_000_000_000
    history: list[dict[str, Any]] = [{"call": int((t - 0.01) * ns), "return": int(t * ns), "ok": True} for t in (0.5, 1.5, 1.6, 2.1)]
    s = per_second(history, 0.0, 2.3)  # the run ended 0.3 s into its third second
    assert s.ok == [1, 2]


def test_a_five_minute_page_stays_small(tmp_path):
    run = synthetic_run()
    page = tmp_path / "report.html"
    write_report(page, title="five minutes", verdicts=[("linearizable", True, "ok")], summary=[("seed", 1)], **run)
    text = page.read_text()
    assert len(run["history"]) == 600_000
    # One picture, no element per operation: the page grows with seconds, not operations.
    assert text.count("<svg") == 1 and text.count("<circle") == 0
    assert len(text.encode()) < 400_000, len(text.encode())


def test_the_report_renders_in_a_browser(tmp_path):
    need_chromium()
    run = synthetic_run(seconds=60, ops_per_s=500)
    run["faults"][0]["kind"] = "partition"  # a colour no grid line or text has
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    write_report(page, title="one minute", verdicts=[("linearizable", True, "ok")], summary=[("seed", 1)], **run)
    screenshot(page, png, width=1300, height=1500)
    # Each of the picture's parts reached the screen: leader bars, the throughput line,
    # the p99 line, and a fault's band behind the panels.
    assert pixels_near(png, LEADER_COLOR) > 500, "leader bars"
    assert pixels_near(png, "#2a9d8f") > 200, "throughput line"
    assert pixels_near(png, "#e9c46a") > 200, "p99 line"
    assert pixels_near(png, COLORS["partition"], alpha=0.18, tolerance=4) > 1000, "partition band"


def test_the_report_without_matplotlib_still_has_its_verdicts(tmp_path, monkeypatch):
    import raftproc.ops.plotting

    monkeypatch.setattr(raftproc.ops.plotting, "have_matplotlib", lambda: False)
    page = tmp_path / "report.html"
    write_report(page, title="t", verdicts=[("linearizable", False, "a <b> cycle")], summary=[], **synthetic_run(5, 10))
    text = page.read_text()
    assert "<svg" not in text and "raftproc[plots]" in text and "a &lt;b&gt; cycle" in text and "FAIL" in text


def bench_points() -> list[Point]:
    points = []
    for system, scale in (("raftproc", 1.0), ("pysyncobj", 0.8), ("etcd", 0.3)):
        for inflight in (1, 16, 128):
            runs = [{"ops_per_s": scale * 100 * inflight * f, "p99_ms": 1 + inflight / 10 * f} for f in (0.9, 1.0, 1.1)]
            points.append(Point(system, 3, inflight, 64, 1000, runs=runs))
    points.append(Point("raftproc", 3, 0, 64, 1000, rate=5000.0, runs=[{"ops_per_s": 5000.0, "p99_ms": 3.0}]))
    return points


def test_the_bench_plot_has_a_colour_per_series_a_legend_and_bars(tmp_path):
    svg = tmp_path / "bench.svg"
    assert write_plot(svg, bench_points())
    text = svg.read_text()
    assert "PySyncObj (no fsync), 3 nodes, 64 B" in text and "raftproc, 3 nodes, 64 B" in text
    assert "Throughput against p99 latency" in text and "log scale" in text
    need_chromium()
    page, png = tmp_path / "bench.html", tmp_path / "bench.png"
    page.write_text(f'<!doctype html><body style="margin:0"><img src="{svg.name}"></body>')
    screenshot(page, png, width=1150, height=600)
    # matplotlib's first three colours, one per series (sorted: etcd, pysyncobj, raftproc).
    for color in ("#1f77b4", "#ff7f0e", "#2ca02c"):
        assert pixels_near(png, color) > 150, color
