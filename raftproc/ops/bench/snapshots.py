"""The snapshot figures: how long a node with a large store takes to restart, how
long a follower that missed as many writes takes to catch up through
InstallSnapshot (with the peak memory of both ends), and how much disk each node
uses while a few keys are overwritten millions of times."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from raftproc.ops.bench.loadgens import write_load
from raftproc.ops.bench.output import machine, write_json
from raftproc.ops.bench.targets import largest_rss_mb
from raftproc.ops.cluster import Cluster, ClusterError
from raftproc.ops.layout import local_config

Say = Callable[[str], None]


class RssSampler:
    """Peak resident memory of some processes, sampled every `interval` seconds on a
    thread until stopped."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.02) -> None:
        self._pids = pids
        self.peak_mb: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for pid in self._pids():
                try:
                    rss = psutil.Process(pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak_mb[pid] = max(self.peak_mb.get(pid, 0.0), rss)

    def stop(self) -> float:
        """The highest of the peaks, in MiB (0 when nothing was sampled)."""
        self._stop.set()
        self._thread.join()
        return max(self.peak_mb.values(), default=0.0)


def _running_pid(cluster: Cluster, node_id: int) -> list[int]:
    return [p.pid for p in cluster.processes() if p.node_id == node_id and p.pid and p.state == "running"]


def _status(cluster: Cluster, node_id: int) -> dict[str, Any]:
    status = cluster.node_status(node_id)
    if status is None:
        raise ClusterError(f"node {node_id} does not answer status")
    return status


@contextmanager
def _cluster(prefix: str) -> Iterator[Cluster]:
    """Three nodes running in a temporary directory, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(tmp / "run")
    cluster.create(local_config(3, tmp / "data", tmp / "logs", log_level="warning"))
    try:
        cluster.up(wait=20)
        yield cluster
    finally:
        cluster.down(timeout=3)
        shutil.rmtree(tmp, ignore_errors=True)


def time_until_caught_up(cluster: Cluster, node_id: int, target_index: int, timeout: float = 600) -> dict[str, float]:
    """Start `node_id` and time it: until it answers status, until it has applied
    `target_index`; with its peak RSS over that time."""
    started = time.monotonic()
    sampler = RssSampler(lambda: _running_pid(cluster, node_id))
    cluster.start(node_id)
    answering = None
    try:
        while True:
            status = cluster.node_status(node_id)
            now = time.monotonic()
            if status is not None and answering is None:
                answering = now - started
            if status is not None and status["last_applied"] >= target_index:
                break
            if now - started > timeout:
                raise RuntimeError(f"node {node_id} did not catch up within {timeout}s")
            time.sleep(0.01)  # poll interval of a wait-until loop
    finally:
        peak = sampler.stop()
    return {"answering_s": answering or 0.0, "caught_up_s": time.monotonic() - started, "peak_rss_mb": peak}


def _catch_up_round(cluster: Cluster, keys: int, say: Say, *, round_no: int) -> tuple[dict[str, float], dict[str, float]]:
    """A follower down while `keys` writes go in, then started: its catch-up; then
    stopped and started again: its restart."""
    leader = cluster.wait_for_leader(timeout=30)
    behind = next(i for i in cluster.config.nodes if i != leader)
    cluster.kill(behind)
    sampler = RssSampler(lambda: _running_pid(cluster, leader))
    rate = write_load(cluster, keys, unique=True)  # the same key names each round: the store stays at `keys`
    leader_peak_load = sampler.stop()
    status = _status(cluster, leader)
    say(f"round {round_no}: {keys} writes at {rate:,.0f}/s with node {behind} down; leader snapshot at {status['snapshot_index']}")
    sampler = RssSampler(lambda: _running_pid(cluster, leader))
    catch = time_until_caught_up(cluster, behind, status["commit_index"])
    catch["leader_peak_rss_mb"] = sampler.stop()
    catch["leader_peak_rss_mb_during_load"] = leader_peak_load
    say(f"  catch-up of node {behind} through InstallSnapshot: {catch}")
    cluster.wait_converged(timeout=120)
    status = _status(cluster, behind)
    cluster.kill(behind)
    restart = time_until_caught_up(cluster, behind, status["last_applied"])
    restart["keys"] = status["keys"]
    say(f"  restart of node {behind} with {status['keys']} keys: {restart}")
    return catch, restart


def snapshot_bench(*, keys: int, churn_writes: int, churn_keys: int, repeats: int, say: Say) -> dict[str, Any]:
    """The figures the snapshot issue asks for, each over `repeats` rounds."""
    out: dict[str, Any] = {"keys": keys, "churn_writes": churn_writes, "churn_keys": churn_keys, "catch_up": [], "restart": []}
    with _cluster("raftproc-snapbench-") as cluster:
        for r in range(repeats):
            catch, restart = _catch_up_round(cluster, keys, say, round_no=r + 1)
            out["catch_up"].append(catch)
            out["restart"].append(restart)
    out["disk"] = disk_bound(churn_writes, churn_keys, say) if churn_writes else []
    return out


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def disk_bound(writes: int, keys: int, say: Say, steps: int = 5) -> list[dict[str, float]]:
    """Disk used per node after each fifth of `writes` writes to `keys` keys."""
    rows = []
    with _cluster("raftproc-diskbench-") as cluster:
        done = 0
        for _ in range(steps):
            rate = write_load(cluster, writes // steps, unique=False, keys=keys)
            done += writes // steps
            cluster.wait_converged(timeout=120)
            nodes = list(cluster.config.nodes)
            statuses = [cluster.node_status(n) for n in nodes]
            row = {
                "writes": done,
                "ops_per_s": rate,
                "max_node_disk_mb": max(_dir_mb(cluster.config.node_data_dir(n)) for n in nodes),
                "max_log_entries": max(s["log_entries"] for s in statuses if s),
                "max_rss_mb": largest_rss_mb([pid for n in nodes for pid in _running_pid(cluster, n)]),
            }
            rows.append(row)
            say(f"  {done:,} writes to {keys:,} keys: {row}")
    return rows


def snapshot_figures(*, keys: int, churn_writes: int, churn_keys: int, repeats: int, out: Path) -> None:
    """Measure, print the medians, write the JSON to `out`."""
    result = snapshot_bench(
        keys=keys, churn_writes=churn_writes, churn_keys=churn_keys, repeats=repeats, say=lambda m: print(m, flush=True)
    )

    def med(rows: str, key: str) -> float:
        return statistics.median(r[key] for r in result[rows])

    print()
    print(
        f"  restart with {keys:,} keys (median of {repeats}): answering {med('restart', 'answering_s'):.2f} s, "
        f"caught up {med('restart', 'caught_up_s'):.2f} s, peak RSS {med('restart', 'peak_rss_mb'):.0f} MB"
    )
    print(
        f"  catch-up after missing {keys:,} writes (median of {repeats}): {med('catch_up', 'caught_up_s'):.2f} s, "
        f"peak RSS follower {med('catch_up', 'peak_rss_mb'):.0f} MB, leader {med('catch_up', 'leader_peak_rss_mb'):.0f} MB"
    )
    for row in result["disk"]:
        print(
            f"  after {row['writes']:>10,} writes to {churn_keys:,} keys: {row['max_node_disk_mb']:7.1f} MB on disk per node, "
            f"{row['max_log_entries']:>7,} log entries in memory, RSS {row['max_rss_mb']:.0f} MB, {row['ops_per_s']:,.0f} ops/s"
        )
    result["machine"] = machine()
    write_json(out, result)
    print(f"\n  results: {out}")
