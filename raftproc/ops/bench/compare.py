"""The comparison: every system at every point, for each cluster size. Each round
starts each system afresh and measures all its points, systems one after another,
so machine noise hits all alike; the disk's fsync cost is measured in each round
too. Optional extras: each raftproc build open-loop at half its peak, and failover
times."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from raftproc.ops.bench.measure import failover, fdatasync_ms, measure
from raftproc.ops.bench.other_systems import EtcdTarget, PySyncObjTarget, etcd_binary, pysyncobj_python
from raftproc.ops.bench.output import Results
from raftproc.ops.bench.points import Point
from raftproc.ops.bench.redis import RespComparison, missing_tools, resp_comparison
from raftproc.ops.bench.targets import RaftprocTarget, Target

# "redis": raftproc's RESP port beside redis-server, all under redis-benchmark (redis.py).
# "raftproc-pure": this checkout with RAFTPROC_PURE=1, beside its compiled build.
SYSTEMS = ("raftproc", "raftproc-baseline", "raftproc-pure", "raftproc-tls", "raftproc-bgsync", "pysyncobj", "etcd", "redis")
# --large: (in flight, value bytes, keys). Fewer keys for 1 MiB keeps each node's
# store (and every snapshot of it) near 64 MiB.
LARGE = [(128, 16384, 1000), (16, 1048576, 64)]
Makers = dict[str, Callable[[], Target]]
PointKey = tuple[str, int, int, int]  # system, in flight, value bytes, keys


@dataclass
class Comparison:
    nodes: list[int]  # cluster sizes
    inflights: list[int]
    value_sizes: list[int]
    keys: list[int]
    repeats: int
    warmup: float
    window: float
    generators: int  # load generator processes (1 when one request is in flight)
    systems: list[str]  # "raftproc" first (see systems_to_run)
    venvs: Path  # where PySyncObj's virtualenv is made
    baseline: Path | None = None  # another raftproc checkout, for raftproc-baseline
    failover_rounds: int = 0
    half_load: bool = False
    large: bool = False
    redis_tests: tuple[str, ...] = ("set", "get")  # redis-benchmark's tests, with "redis" in systems


def systems_to_run(compare: list[str], *, baseline: bool, tls: bool) -> list[str]:
    """raftproc, then its baseline and TLS builds when asked, then the peers to compare."""
    systems = ["raftproc"] + (["raftproc-baseline"] if baseline else []) + (["raftproc-tls"] if tls else [])
    systems += [s for s in compare if s and s not in systems]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise ValueError(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if "redis" in systems and missing_tools():
        raise ValueError(f"--compare redis needs {' and '.join(missing_tools())} on PATH (Debian: redis-tools, redis-server)")
    return systems


def make_targets(c: Comparison, nodes: int) -> Makers:
    """A maker per system that can run here (etcd needs root to install)."""
    makers: Makers = {"raftproc": partial(RaftprocTarget, nodes)}
    if c.baseline is not None:
        makers["raftproc-baseline"] = partial(RaftprocTarget, nodes, source=c.baseline.resolve())
    if "raftproc-pure" in c.systems:
        makers["raftproc-pure"] = partial(RaftprocTarget, nodes, pure=True)
    if "raftproc-tls" in c.systems:
        makers["raftproc-tls"] = partial(RaftprocTarget, nodes, tls=True)
    if "raftproc-bgsync" in c.systems:
        makers["raftproc-bgsync"] = partial(RaftprocTarget, nodes, background_sync=True)
    if "pysyncobj" in c.systems:
        makers["pysyncobj"] = partial(PySyncObjTarget, nodes, pysyncobj_python(c.venvs / "pysyncobj"))
    if "etcd" in c.systems:
        binary = etcd_binary()
        if binary:
            makers["etcd"] = partial(EtcdTarget, nodes, binary)
    return makers


def run_comparison(c: Comparison) -> Results:
    results = Results()
    for nodes in c.nodes:
        makers = make_targets(c, nodes)
        points = _points(c, makers, nodes)
        for _ in range(c.repeats):
            # The disk's own cost, measured where the clusters keep their data, in each round.
            results.fdatasync_p50_ms.append(statistics.median(fdatasync_ms(Path(tempfile.gettempdir()))))
            for system, make in makers.items():
                _measure_system(c, make, [p for (s, *_), p in points.items() if s == system])
        results.points += points.values()
        if c.half_load:
            results.points += _half_load(c, makers, list(points.values()), nodes)
        if c.failover_rounds and nodes == c.nodes[0]:
            results.failover_s = _failovers(nodes, c.failover_rounds)
    if "redis" in c.systems:
        results.resp_points = resp_comparison(_resp(c))
    return results


def _resp(c: Comparison) -> RespComparison:
    """The first cluster size, value size and key count, at every load."""
    return RespComparison(
        nodes=c.nodes[0],
        inflights=c.inflights,
        tests=list(c.redis_tests),
        value_size=c.value_sizes[0],
        keys=c.keys[0],
        repeats=c.repeats,
        warmup=c.warmup,
        window=c.window,
    )


def _points(c: Comparison, makers: Makers, nodes: int) -> dict[PointKey, Point]:
    points = {
        (s, inflight, size, keys): Point(s, nodes, inflight, size, keys)
        for s in makers
        for inflight in c.inflights
        for size in c.value_sizes
        for keys in c.keys
    }
    if c.large:
        for s in makers:
            if s.startswith("raftproc"):
                points.update({(s, inflight, size, keys): Point(s, nodes, inflight, size, keys) for inflight, size, keys in LARGE})
    return points


def _measure_system(c: Comparison, make: Callable[[], Target], points: list[Point]) -> None:
    """One more run of each of a system's points, on one fresh cluster."""
    target = make()
    try:
        for point in points:
            gens = 1 if point.inflight == 1 else c.generators
            measure(target, point, warmup=c.warmup, window=c.window, generators=gens)
            last = point.runs[-1]
            print(
                f"  {point.system:<17} n={point.nodes} inflight={point.inflight:<4} value={point.value_size:<5} "
                f"{last['ops_per_s']:>9.0f} ops/s  p99 {last['p99_ms']:.2f} ms",
                flush=True,
            )
    finally:
        target.close()


def _half_load(c: Comparison, makers: Makers, points: list[Point], nodes: int) -> list[Point]:
    """Each raftproc build open-loop at half of its own closed-loop peak, interleaved."""
    size = c.value_sizes[0]
    halves = {}
    for s in makers:
        if s.startswith("raftproc"):
            peak = max(p.median("ops_per_s") for p in points if p.system == s and p.value_size == size)
            halves[s] = Point(s, nodes, 4096, size, c.keys[0], rate=round(peak / 2))
    for _ in range(c.repeats):
        for s, half in halves.items():
            target = makers[s]()
            try:
                measure(target, half, warmup=c.warmup, window=c.window, generators=c.generators)
            finally:
                target.close()
    for s, half in halves.items():
        print(f"  {s} n={nodes} open loop at half of peak ({half.rate:.0f} ops/s): p99 {half.median('p99_ms'):.2f} ms", flush=True)
    return list(halves.values())


def _failovers(nodes: int, rounds: int) -> list[float]:
    target = RaftprocTarget(nodes)
    try:
        return failover(target, rounds)
    finally:
        target.close()
