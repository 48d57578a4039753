"""What the bench prints and writes: the comparison's table (medians with min-max),
the figures a reader looks for first, and the JSON that docs/ and
raftproc.ops.benchplot read (its fields are a format: keep them)."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftproc.ops.bench.points import Point
from raftproc.ops.bench.redis import RespPoint
from raftproc.ops.bench.redis_table import resp_ratios


@dataclass
class Results:
    """A comparison's measurements."""

    points: list[Point] = field(default_factory=list)
    failover_s: list[float] = field(default_factory=list)  # seconds until a write commits after kill -9 of the leader
    fdatasync_p50_ms: list[float] = field(default_factory=list)  # the disk's fdatasync p50, one per round
    resp_points: list[RespPoint] = field(default_factory=list)  # --compare redis: measured with redis-benchmark


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1))


def write_results(path: Path, results: Results, command: str) -> None:
    data: dict[str, Any] = {
        "points": [p.as_dict() for p in results.points],
        "failover_s": results.failover_s,
        "fdatasync_p50_ms": results.fdatasync_p50_ms,
        "command": command,
    }
    if results.resp_points:
        # Apart from "points": another client, other fields (test, clients, pipeline).
        data["resp"] = {"points": [p.as_dict() for p in results.resp_points], "ratios": resp_ratios(results.resp_points)}
    write_json(path, data)


def print_table(points: list[Point], *, warmup: float, window: float, repeats: int) -> None:
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"window {window}s after {warmup}s warm-up, {repeats} runs, median [min-max]"
    )
    print(
        f"{'system':<18}{'nodes':>5}{'load':>9}{'value':>8}{'keys':>6}  {'ops/s':<24}{'p50 ms':<20}{'p99 ms':<20}{'p999 ms':<20}"
        f"{'node us/op':<20}{'gen cpu s':<10}{'RSS MB':>7}{'leader chg':>11}"
    )
    for p in points:
        load = f"{p.rate:.0f}/s" if p.rate else str(p.inflight)
        print(
            f"{p.system:<18}{p.nodes:>5}{load:>9}{p.value_size:>8}{p.keys:>6}  {p.shown('ops_per_s', 0):<24}"
            f"{p.shown('p50_ms', 2):<20}{p.shown('p99_ms', 2):<20}{p.shown('p999_ms', 2):<20}"
            f"{p.shown('node_cpu_us_per_op', 0):<20}{p.median('loadgen_cpu_s'):<10.2f}"
            f"{max(r['rss_mb'] for r in p.runs):>7.1f}{p.median('leader_changes'):>11.0f}"
        )
    print()


def print_headlines(results: Results, systems: list[str]) -> None:
    """The figures under the table: bandwidth with large values, raftproc's latency
    against the disk's fsync, its CPU per write, peak throughput against each peer,
    failover."""
    points = results.points
    for p in points:
        if p.value_size >= 16384 and not p.rate:
            print(
                f"{p.system} {p.nodes} nodes, {p.value_size // 1024} KiB values, {p.inflight} in flight: "
                f"{p.median('ops_per_s'):,.0f} ops/s = {p.median('ops_per_s') * p.value_size / 2**20:,.1f} MiB/s of values, "
                f"p99 {p.median('p99_ms'):.1f} ms"
            )
    _print_fsync_floor(results)
    for p in _raftproc_closed_loop(points):
        lo, hi = p.span("node_cpu_us_per_op")
        print(
            f"raftproc node CPU per committed write at {p.inflight} in flight: {p.median('node_cpu_us_per_op'):,.0f} us [{lo:,.0f}-{hi:,.0f}]"
        )
    best = {s: max((p.median("ops_per_s") for p in points if p.system == s), default=0) for s in systems}
    for s in systems[1:]:
        if best.get(s):
            print(f"peak throughput raftproc / {s}: {best['raftproc'] / best[s]:.2f}x ({best['raftproc']:.0f} vs {best[s]:.0f} ops/s)")
    if results.failover_s:
        times = results.failover_s
        print(
            f"failover (kill -9 of the leader until a write commits), {len(times)} rounds: "
            f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
        )


def _raftproc_closed_loop(points: list[Point]) -> list[Point]:
    """raftproc's own points with the default 64-byte values, closed loop."""
    return [p for p in points if p.system == "raftproc" and p.value_size == 64 and not p.rate]


def _print_fsync_floor(results: Results) -> None:
    fsyncs = results.fdatasync_p50_ms
    if not fsyncs:
        return
    floor = statistics.median(fsyncs)
    print(
        f"fdatasync p50 of the data directory's disk (append {len(fsyncs)} x 300 records of 128 B): median {floor:.3f} ms "
        f"[{min(fsyncs):.3f}-{max(fsyncs):.3f}]"
    )
    for p in _raftproc_closed_loop(results.points):
        if p.inflight == 1:
            print(f"raftproc p50 at 1 in flight: {p.median('p50_ms'):.3f} ms = {p.median('p50_ms') / floor:.1f}x the fdatasync p50")
