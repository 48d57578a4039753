"""Benchmark drivers: a raftproc cluster under load generators in separate processes.

Each point (cluster size, requests in flight, value size) is measured `repeats`
times over a fixed window after a warm-up; results keep every run so reports can
quote medians with min-max. CPU seconds of every node and of the generators over
the window are kept too, so a reader can see who was the bottleneck.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from raftproc.ops.cluster import Cluster
from raftproc.ops.layout import free_ports, local_config


@dataclass
class Point:
    system: str
    nodes: int
    inflight: int
    value_size: int
    keys: int
    rate: float = 0.0  # open-loop ops/s in total; 0: closed loop with `inflight` outstanding
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [r[key] for r in self.runs if r.get(key) == r.get(key)]  # drop NaN
        return statistics.median(values) if values else float("nan")

    def span(self, key: str) -> tuple[float, float]:
        values = [r[key] for r in self.runs]
        return (min(values), max(values)) if values else (float("nan"), float("nan"))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["median"] = {
            k: self.median(k)
            for k in ("ops_per_s", "p50_ms", "p99_ms", "p999_ms", "node_cpu_s", "node_cpu_us_per_op", "loadgen_cpu_s", "leader_changes")
        }
        return d


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


def run_loadgens(
    target: tuple[str, int],
    inflight: int,
    generators: int,
    warmup: float,
    window: float,
    value_size: int,
    keys: int,
    protocol: str = "raftproc",
    rate: float = 0.0,
    read: str = "",
    config: Path | None = None,
) -> list[dict[str, Any]]:
    gens = min(generators, inflight)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftproc.ops.loadgen",
                "--target",
                f"{target[0]}:{target[1]}",
                "--inflight",
                str(max(1, inflight // gens)),
                "--connections",
                str(max(1, min(16, inflight // gens))),
                "--warmup",
                str(warmup),
                "--window",
                str(window),
                "--value-size",
                str(value_size),
                "--keys",
                str(keys),
                "--seed",
                str(g + 1),
                "--protocol",
                protocol,
                "--rate",
                str(rate / gens),
            ]
            + (["--read", read] if read else [])
            + (["--config", str(config)] if config else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for g in range(gens)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=warmup + window + 60)
        if p.returncode != 0:
            raise RuntimeError(f"load generator failed: {stderr.strip()[-500:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum throughput; latency percentiles of the combined load are approximated by
    the worst generator's (each generator sees the same server)."""
    return {
        "ops_per_s": sum(p["ops_per_s"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "p50_ms": max(p["p50_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "p999_ms": max(p["p999_ms"] for p in parts),
        "loadgen_cpu_s": sum(p["cpu_s"] for p in parts),
    }


class RaftprocTarget:
    """A raftproc cluster in a temporary directory."""

    system = "raftproc"
    protocol = "raftproc"

    def __init__(self, nodes: int, *, background_sync: bool = False, source: Path | None = None, tls: bool = False) -> None:
        """`source`: run the nodes from another checkout of raftproc (a baseline for an
        A/B measured in one invocation). `tls`: mutual TLS on every connection, the
        load generators' too."""
        if background_sync:
            self.system = "raftproc-bgsync"
        if source is not None:
            self.system = "raftproc-baseline"
        if tls:
            self.system = "raftproc-tls"
        self.tmp = Path(tempfile.mkdtemp(prefix="raftproc-bench-"))
        self.cluster = Cluster(self.tmp / "run", env={"PYTHONPATH": str(source)} if source is not None else None)
        # An older checkout may not know the metrics address: its config leaves it out.
        ports = free_ports(2 * nodes) if source is not None else None
        self.cluster.create(
            local_config(nodes, self.tmp / "data", self.tmp / "logs", ports=ports, log_level="warning", background_sync=background_sync),
            tls=tls,
        )
        self.config = self.cluster.config_path if tls else None
        self.cluster.up(wait=20)

    def leader_address(self) -> tuple[str, int]:
        leader = self.cluster.wait_for_leader(timeout=20)
        return self.cluster.config.nodes[leader].client

    def node_pids(self) -> list[int]:
        return [p.pid for p in self.cluster.processes() if p.pid and p.state == "running"]

    def leader_changes_marker(self) -> int:
        statuses = [self.cluster.node_status(p.node_id) for p in self.cluster.processes()]
        return max((s["term"] for s in statuses if s), default=0)

    def rss_mb(self) -> float:
        return max((psutil.Process(pid).memory_info().rss / 2**20 for pid in self.node_pids()), default=0.0)

    def close(self) -> None:
        self.cluster.down(timeout=3)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure(target: Any, point: Point, *, warmup: float, window: float, generators: int) -> None:
    address = target.leader_address()
    term_before = target.leader_changes_marker()
    pids = target.node_pids()
    cpu_before = cpu_seconds(pids)
    parts = run_loadgens(
        address,
        point.inflight,
        generators,
        warmup,
        window,
        point.value_size,
        point.keys,
        target.protocol,
        point.rate,
        config=getattr(target, "config", None),
    )
    run = combine(parts)
    run["node_cpu_s"] = (cpu_seconds(pids) - cpu_before) * window / (warmup + window)
    # CPU of every node per operation answered: what decides throughput when nodes,
    # peers and load generators share a few cores.
    run["node_cpu_us_per_op"] = run["node_cpu_s"] / max(run["ops_per_s"] * window, 1) * 1e6
    run["leader_changes"] = target.leader_changes_marker() - term_before
    run["rss_mb"] = target.rss_mb()
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


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # poll interval of a wait-until loop
    raise RuntimeError(f"timed out waiting for {what}")


class ProcessTarget:
    """A peer system: a few server processes we start, watch and stop."""

    system = "?"
    protocol = "raftproc"

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.system}-bench-"))
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], name: str) -> None:
        out = open(self.tmp / f"{name}.out", "wb")  # noqa: SIM115
        self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmp))

    def node_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def rss_mb(self) -> float:
        return max((psutil.Process(pid).memory_info().rss / 2**20 for pid in self.node_pids()), default=0.0)

    def leader_changes_marker(self) -> int:
        return 0

    def close(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait(10)


class EtcdTarget(ProcessTarget):
    """Debian's etcd, one member per process on loopback, fsync before reply."""

    system = "etcd"
    protocol = "etcd"

    def __init__(self, nodes: int, binary: str = "etcd") -> None:
        super().__init__()
        from raftproc.ops.layout import free_ports

        ports = free_ports(2 * nodes)
        self.clients = [("127.0.0.1", ports[nodes + i]) for i in range(nodes)]
        cluster = ",".join(f"n{i}=http://127.0.0.1:{ports[i]}" for i in range(nodes))
        for i in range(nodes):
            self.spawn(
                [
                    binary,
                    "--name",
                    f"n{i}",
                    "--data-dir",
                    str(self.tmp / f"n{i}"),
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{ports[i]}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{ports[i]}",
                    "--listen-client-urls",
                    f"http://127.0.0.1:{ports[nodes + i]}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{ports[nodes + i]}",
                    "--initial-cluster",
                    cluster,
                    "--initial-cluster-state",
                    "new",
                    "--logger",
                    "zap",
                    "--log-level",
                    "error",
                ],
                f"n{i}",
            )
        self.leader_address()

    def _status(self, address: tuple[str, int]) -> dict | None:
        import http.client

        try:
            conn = http.client.HTTPConnection(*address, timeout=1)
            conn.request("POST", "/v3/maintenance/status", body="{}", headers={"Content-Type": "application/json"})
            data = json.loads(conn.getresponse().read())
            conn.close()
            return data
        except (OSError, ValueError):
            return None

    def leader_address(self) -> tuple[str, int]:
        def find():
            for address in self.clients:
                s = self._status(address)
                if s and s.get("leader") and s["leader"] == s.get("header", {}).get("member_id"):
                    return address
            return None

        return _wait(find, 30, "an etcd leader")

    def leader_changes_marker(self) -> int:
        terms = [int(s.get("raftTerm", 0)) for s in (self._status(a) for a in self.clients) if s]
        return max(terms, default=0)


class PySyncObjTarget(ProcessTarget):
    """PySyncObj nodes (raftproc/ops/peers/pysyncobj_node.py) in their own venv."""

    system = "pysyncobj"

    def __init__(self, nodes: int, python: str) -> None:
        super().__init__()
        from raftproc.ops.layout import free_ports

        ports = free_ports(2 * nodes)
        raft = [f"127.0.0.1:{ports[i]}" for i in range(nodes)]
        self.clients = [("127.0.0.1", ports[nodes + i]) for i in range(nodes)]
        script = str(Path(__file__).with_name("peers") / "pysyncobj_node.py")
        for i in range(nodes):
            others = [a for j, a in enumerate(raft) if j != i]
            self.spawn([python, script, raft[i], str(ports[nodes + i]), str(self.tmp / f"journal-{i}"), *others], f"n{i}")
        self.leader_address()

    def leader_address(self) -> tuple[str, int]:
        from raftproc.client import Client

        def find():
            for i, address in enumerate(self.clients):
                try:
                    c = Client({i: address})
                    if c.status(i, timeout=1).get("is_leader"):
                        return address
                except Exception:
                    pass
                finally:
                    c.close()
            return None

        return _wait(find, 30, "a PySyncObj leader")


# --- snapshots: restart, catch-up, bounded disk ------------------------------------------


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

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def write_load(
    cluster: Cluster, count: int, *, unique: bool, keys: int = 1000, generators: int = 4, inflight: int = 64, value_size: int = 16
) -> float:
    """`count` writes through `generators` closed-loop load generators; returns ops/s."""
    leader = cluster.wait_for_leader(timeout=30)
    host, port = cluster.config.nodes[leader].client
    per = count // generators
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftproc.ops.loadgen",
                "--target",
                f"{host}:{port}",
                "--inflight",
                str(inflight),
                "--connections",
                "8",
                "--count",
                str(per),
                "--window",
                "1800",
                "--value-size",
                str(value_size),
                "--keys",
                str(keys),
                "--seed",
                str(g + 1),
            ]
            + (["--unique"] if unique else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for g in range(generators)
    ]
    rates = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=1900)
        if p.returncode != 0:
            raise RuntimeError(f"load generator failed: {stderr.strip()[-500:]}")
        result = json.loads(stdout.strip().splitlines()[-1])
        if result["ops"] + result["errors"] < per or result["errors"]:
            raise RuntimeError(f"load generator finished {result['ops']} of {per} writes, {result['errors']} errors")
        rates.append(result["ops_per_s"])
    return sum(rates)


def _running_pid(cluster: Cluster, node_id: int) -> list[int]:
    return [p.pid for p in cluster.processes() if p.node_id == node_id and p.pid and p.state == "running"]


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
        peaks = sampler.stop()
    return {"answering_s": answering or 0.0, "caught_up_s": time.monotonic() - started, "peak_rss_mb": max(peaks.values(), default=0.0)}


def snapshot_bench(*, keys: int, churn_writes: int, churn_keys: int, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """The figures the snapshot issue asks for, each over `repeats` rounds."""
    out: dict[str, Any] = {"keys": keys, "churn_writes": churn_writes, "churn_keys": churn_keys, "catch_up": [], "restart": []}
    tmp = Path(tempfile.mkdtemp(prefix="raftproc-snapbench-"))
    cluster = Cluster(tmp / "run")
    cluster.create(local_config(3, tmp / "data", tmp / "logs", log_level="warning"))
    try:
        cluster.up(wait=20)
        for r in range(repeats):
            leader = cluster.wait_for_leader(timeout=30)
            behind = next(i for i in cluster.config.nodes if i != leader)
            cluster.kill(behind)
            sampler = RssSampler(lambda leader=leader: _running_pid(cluster, leader))
            rate = write_load(cluster, keys, unique=True)  # the same key names each round: the store stays at `keys`
            leader_peak_load = max(sampler.stop().values(), default=0.0)
            status = cluster.node_status(leader)
            say(f"round {r + 1}: {keys} writes at {rate:,.0f}/s with node {behind} down; leader snapshot at {status['snapshot_index']}")
            sampler = RssSampler(lambda leader=leader: _running_pid(cluster, leader))
            catch = time_until_caught_up(cluster, behind, status["commit_index"])
            catch["leader_peak_rss_mb"] = max(sampler.stop().values(), default=0.0)
            catch["leader_peak_rss_mb_during_load"] = leader_peak_load
            out["catch_up"].append(catch)
            say(f"  catch-up of node {behind} through InstallSnapshot: {catch}")
            cluster.wait_converged(timeout=120)
            status = cluster.node_status(behind)
            cluster.kill(behind)
            restart = time_until_caught_up(cluster, behind, status["last_applied"])
            restart["keys"] = status["keys"]
            out["restart"].append(restart)
            say(f"  restart of node {behind} with {status['keys']} keys: {restart}")
        cluster.down(timeout=5)
    finally:
        cluster.down(timeout=3)
        shutil.rmtree(tmp, ignore_errors=True)
    out["disk"] = disk_bound(churn_writes, churn_keys, say) if churn_writes else []
    return out


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def disk_bound(writes: int, keys: int, say: Callable[[str], None], steps: int = 5) -> list[dict[str, float]]:
    """Disk used per node after each fifth of `writes` writes to `keys` keys."""
    tmp = Path(tempfile.mkdtemp(prefix="raftproc-diskbench-"))
    cluster = Cluster(tmp / "run")
    cluster.create(local_config(3, tmp / "data", tmp / "logs", log_level="warning"))
    rows = []
    try:
        cluster.up(wait=20)
        done = 0
        for _ in range(steps):
            rate = write_load(cluster, writes // steps, unique=False, keys=keys)
            done += writes // steps
            cluster.wait_converged(timeout=120)
            disk = [_dir_mb(cluster.config.node_data_dir(n)) for n in cluster.config.nodes]
            statuses = [cluster.node_status(n) for n in cluster.config.nodes]
            row = {
                "writes": done,
                "ops_per_s": rate,
                "max_node_disk_mb": max(disk),
                "max_log_entries": max(s["log_entries"] for s in statuses if s),
                "max_rss_mb": max(
                    psutil.Process(pid).memory_info().rss / 2**20 for n in cluster.config.nodes for pid in _running_pid(cluster, n)
                ),
            }
            rows.append(row)
            say(f"  {done:,} writes to {keys:,} keys: {row}")
    finally:
        cluster.down(timeout=3)
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def read_bench(
    *, inflights: list[int], repeats: int, warmup: float, window: float, generators: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Gets through the log, by ReadIndex and by lease, interleaved on one cluster."""
    target = RaftprocTarget(3)
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        write_load(target.cluster, 2000, unique=False, keys=1000)
        for _ in range(repeats):
            for inflight in inflights:
                for mode in ("log", "index", "lease"):
                    address = target.leader_address()
                    gens = 1 if inflight == 1 else generators
                    run = combine(run_loadgens(address, inflight, gens, warmup, window, 64, 1000, read=mode))
                    rows.setdefault((mode, inflight), []).append(run)
                    say(
                        f"  read={mode:<5} inflight={inflight:<4} {run['ops_per_s']:>9.0f} ops/s  p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms"
                    )
    finally:
        target.close()
    out = []
    for (mode, inflight), runs in rows.items():
        out.append(
            {
                "read": mode,
                "inflight": inflight,
                "runs": runs,
                "median": {k: statistics.median(r[k] for r in runs) for k in ("ops_per_s", "p50_ms", "p99_ms")},
            }
        )
    return out
