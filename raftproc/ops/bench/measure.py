"""One run of a point against a target: throughput and latency from the load
generators, CPU of every node over the window, the largest node's memory, leader
changes. Besides: what an fsync of the disk costs, and how long a failover takes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import psutil

from raftproc.ops.bench.loadgens import Load, run_loadgens
from raftproc.ops.bench.points import Point, combine
from raftproc.ops.bench.targets import RaftprocTarget, Target, largest_rss_mb


def fdatasync_ms(directory: Path, samples: int = 300, record_bytes: int = 128) -> list[float]:
    """What the disk under `directory` costs a write-ahead log: append a small record
    and fdatasync it, `samples` times, into a fresh file there. Milliseconds, sorted.
    (A preallocated file is cheaper still: an append also makes the journal record
    the new size.)"""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="fdatasync-", dir=directory)
    record = b"r" * record_bytes
    times = []
    try:
        for _ in range(samples):
            os.write(fd, record)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        os.unlink(name)
    return sorted(times)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure(target: Target, point: Point, *, warmup: float, window: float, generators: int) -> None:
    """One more run of `point`, appended to its runs."""
    address = target.leader_address()
    term_before = target.leader_changes_marker()
    pids = target.node_pids()
    cpu_before = cpu_seconds(pids)
    load = Load(
        point.inflight,
        generators,
        warmup,
        window,
        value_size=point.value_size,
        keys=point.keys,
        protocol=target.protocol,
        rate=point.rate,
        config=target.config,
    )
    run = combine(run_loadgens(address, load))
    run["node_cpu_s"] = (cpu_seconds(pids) - cpu_before) * window / (warmup + window)
    # CPU of every node per operation answered: what decides throughput when nodes,
    # peers and load generators share a few cores.
    run["node_cpu_us_per_op"] = run["node_cpu_s"] / max(run["ops_per_s"] * window, 1) * 1e6
    run["leader_changes"] = target.leader_changes_marker() - term_before
    run["rss_mb"] = largest_rss_mb(target.node_pids())
    point.runs.append(run)


def failover(target: RaftprocTarget, rounds: int) -> list[float]:
    """Kill -9 the leader with a writer running; seconds until a write commits again."""
    cluster = target.cluster
    times = []
    for _ in range(rounds):
        leader = cluster.wait_for_leader(timeout=20)
        client = cluster.client(timeout=10, attempt_timeout=0.05, max_backoff=0.005)
        client.set("failover", "before")
        killed_at = time.monotonic()
        cluster.kill(leader)
        # The client retries until a new leader commits the write.
        client.set("failover", "after")
        times.append(time.monotonic() - killed_at)
        client.close()
        cluster.start(leader)
        cluster.wait_converged(timeout=20)
    return times
