"""raftproc's RESP port beside Redis itself, every system driven by the same client:
Debian's redis-benchmark (`scripts/bench.py --compare redis`).

The systems, each started afresh in every round, rounds interleaved as in compare.py:
- raftproc-resp           a raftproc cluster (RaftprocTarget: fsync on), through the
                          RESP port of its leader
- raftproc-resp-follower  the same cluster through a follower's RESP port, which
                          forwards each command to the leader (one hop more)
- redis-durable           one redis-server, `appendonly yes`, `appendfsync always`: it
                          fsyncs each write before it replies (no replication)
- redis-memory            one redis-server with no persistence at all

A point is one test (set, get, incr, mset) at `c` connections of `P` pipelined
requests: c x P requests in flight, to match raftproc's own rows at --inflight.
redis-benchmark counts requests, so an MSET of 10 keys is one op.

redis-benchmark runs for a number of requests, not for a time, so each run is three
invocations: a probe of a few requests gives the rate; a warm-up fills the rest of
`warmup` seconds; the measured run asks for `window` seconds' worth at that rate.

A run fails, loudly, rather than yield a fast number: redis-benchmark 7 stops at the
first error reply ("Error from server: ..." on stderr, exit 1, no row for the test),
and it hangs forever when it cannot connect, so every invocation has a timeout. A
failed run keeps its reason and NaN figures; medians skip it and the table says
FAILED.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from raftproc.config import Address
from raftproc.ops.bench.measure import cpu_seconds
from raftproc.ops.bench.other_systems import wait_for
from raftproc.ops.bench.points import Point
from raftproc.ops.bench.targets import RaftprocTarget
from raftproc.ops.layout import free_ports

TOOLS = ("redis-benchmark", "redis-server")
TESTS = ("set", "get", "incr", "mset")
# raftproc's own rows use two load generators of up to 16 connections each.
MAX_CONNECTIONS = 32
# The figures of a run a point reports the median of (the JSON's "median").
RESP_MEDIANS = ("ops_per_s", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms", "node_cpu_us_per_op")
FIGURES = {"ops_per_s": "rps", "avg_ms": "avg_latency_ms", "p50_ms": "p50_latency_ms", "p95_ms": "p95_latency_ms"}
FIGURES |= {"p99_ms": "p99_latency_ms", "max_ms": "max_latency_ms"}
PROBE_TIMEOUT = 30.0  # seconds for the probe's few requests, even from a slow cluster


class BenchmarkFailed(Exception):
    """A redis-benchmark invocation that gave no trustworthy figure, and why."""


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def clients_and_pipeline(inflight: int) -> tuple[int, int]:
    """`inflight` requests as connections x pipeline depth: one request per connection
    up to MAX_CONNECTIONS, deeper pipelines beyond."""
    clients = min(MAX_CONNECTIONS, inflight)
    return clients, max(1, inflight // clients)


@dataclass
class RespPoint(Point):
    """A point measured with redis-benchmark: `test` at `clients` x `pipeline` in flight."""

    test: str = "set"
    clients: int = 1
    pipeline: int = 1

    def span(self, key: str) -> tuple[float, float]:
        values = [r[key] for r in self.runs if r[key] == r[key]]  # drop the NaN of failed runs
        return (min(values), max(values)) if values else (math.nan, math.nan)

    def failures(self) -> list[str]:
        return [r["error"] for r in self.runs if r.get("error")]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["median"] = {k: self.median(k) for k in RESP_MEDIANS}
        return d


# --- one redis-benchmark invocation ---------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    address: Address
    test: str
    clients: int
    pipeline: int
    requests: int
    value_size: int
    keys: int

    def args(self) -> list[str]:
        host, port = self.address
        return ["redis-benchmark", "-h", host, "-p", str(port), "-t", self.test, "-n", str(self.requests), "-c", str(self.clients)] + [
            "-P",
            str(self.pipeline),
            "-d",
            str(self.value_size),
            "-r",
            str(self.keys),
            "--csv",
        ]


def run_benchmark(inv: Invocation, timeout: float) -> dict[str, float]:
    """The figures of one invocation (FIGURES' keys), or BenchmarkFailed."""
    try:
        r = subprocess.run(inv.args(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchmarkFailed(
            f"{inv.test} x {inv.requests} to {inv.address[0]}:{inv.address[1]} did not finish within {timeout:.0f}s"
        ) from e
    return parse_csv(inv.test, r.returncode, r.stdout, r.stderr)


def parse_csv(test: str, returncode: int, stdout: str, stderr: str) -> dict[str, float]:
    """redis-benchmark --csv's row for `test`: a header, then one quoted row per test
    ("MSET (10 keys)" for mset). An error reply anywhere, an exit code, a missing row
    or no throughput fails the run."""
    errors = [line.strip() for line in stderr.splitlines() if line.startswith("Error")]
    if errors:
        raise BenchmarkFailed(f"{test}: {errors[0]}")
    if returncode != 0:
        raise BenchmarkFailed(f"{test}: redis-benchmark exited with {returncode}: {stderr.strip()[-300:]!r}")
    rows = [row for row in csv.DictReader(io.StringIO(stdout)) if (row.get("test") or "").split(" ")[0] == test.upper()]
    if len(rows) != 1:
        raise BenchmarkFailed(f"{test}: no row for it in redis-benchmark's output {stdout.strip()[-300:]!r}")
    try:
        figures = {key: float(rows[0][column]) for key, column in FIGURES.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise BenchmarkFailed(f"{test}: unreadable row {rows[0]!r}") from e
    if not figures["ops_per_s"] > 0:
        raise BenchmarkFailed(f"{test}: no throughput in {rows[0]!r}")
    return figures


def _timeout(requests: int, rate: float) -> float:
    """Generous for a run of `requests` at `rate`, yet bounded: a stall fails the run."""
    return 10.0 + 4 * requests / rate


def measure_run(inv: Invocation, pids: list[int], *, warmup: float, window: float) -> dict[str, Any]:
    """Probe, warm up, then one measured run of about `window` seconds (see the module
    docstring). `inv.requests`: the probe's size."""
    started = time.monotonic()
    rate = run_benchmark(inv, PROBE_TIMEOUT)["ops_per_s"]
    remaining = warmup - (time.monotonic() - started)
    if remaining > 0:
        n = max(inv.requests, round(rate * remaining))
        rate = run_benchmark(replace(inv, requests=n), _timeout(n, rate))["ops_per_s"]
    n = max(inv.requests, round(rate * window))
    cpu_before = cpu_seconds(pids)
    run: dict[str, Any] = dict(run_benchmark(replace(inv, requests=n), _timeout(n, rate)))
    # CPU of the servers per request answered (raftproc: all its nodes).
    run["node_cpu_us_per_op"] = (cpu_seconds(pids) - cpu_before) / n * 1e6
    return run | {"requests": n, "errors": 0}


def failed_run(reason: str) -> dict[str, Any]:
    return {key: math.nan for key in RESP_MEDIANS} | {"errors": 1, "error": reason}


# --- the systems ----------------------------------------------------------------------


def pong(address: Address, timeout: float = 1.0) -> bool:
    """Does `address` answer a RESP PING with +PONG?"""
    try:
        with socket.create_connection(address, timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while b"\r\n" not in reply:
                chunk = s.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply.startswith(b"+PONG\r\n")
    except OSError:
        return False


def require_pong(address: Address | None, timeout: float) -> Address:
    if address is None:
        raise BenchmarkFailed("the node has no RESP port in its config")
    try:
        wait_for(lambda: pong(address), timeout, f"+PONG from {address[0]}:{address[1]}")
    except RuntimeError as e:
        raise BenchmarkFailed(f"nothing answers PING with +PONG on the RESP port {address[0]}:{address[1]} within {timeout:.0f}s") from e
    return address


class RespTarget(Protocol):
    def addresses(self) -> dict[str, Address | None]: ...  # system -> where redis-benchmark connects, now
    def pids(self) -> list[int]: ...  # the server processes, for CPU
    def close(self) -> None: ...


class RaftprocResp:
    """A raftproc cluster as the raftproc bench starts it; its RESP ports are the 4th
    group of free ports in local_config."""

    def __init__(self, nodes: int, *, follower: bool = True) -> None:
        self.target = RaftprocTarget(nodes)
        self.follower = follower

    def addresses(self) -> dict[str, Address | None]:
        # Asked before every point: the leader may have moved.
        leader = self.target.cluster.wait_for_leader(timeout=20)
        nodes = self.target.cluster.config.nodes
        found: dict[str, Address | None] = {"raftproc-resp": nodes[leader].redis}
        if self.follower:
            found["raftproc-resp-follower"] = nodes[next(i for i in sorted(nodes) if i != leader)].redis
        return found

    def pids(self) -> list[int]:
        return self.target.node_pids()

    def close(self) -> None:
        self.target.close()


class RedisServer:
    """Debian's redis-server on a free loopback port in a temporary directory of its
    own (on the disk the raftproc clusters use), in the foreground, killed at close."""

    def __init__(self, system: str, *, durable: bool, extra: tuple[str, ...] = ()) -> None:
        """`extra`: more config directives as arguments (tests rename a command away)."""
        self.system = system
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{system}-bench-"))
        self.address: Address = ("127.0.0.1", free_ports(1)[0])
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        args = ["redis-server", "--port", str(self.address[1]), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.tmp)]
        args += ["--daemonize", "no", "--logfile", "", *persistence, *extra]
        with open(self.tmp / "server.out", "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmp)
        try:
            wait_for(lambda: self.proc.poll() is not None or pong(self.address), 10, f"{system} to answer PING")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{system} exited with {self.proc.returncode}: {(self.tmp / 'server.out').read_text()[-500:]}")
        except RuntimeError:
            self.close()
            raise

    def addresses(self) -> dict[str, Address | None]:
        return {self.system: self.address}

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc.poll() is None else []

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- the comparison -------------------------------------------------------------------


@dataclass
class RespComparison:
    nodes: int  # raftproc's cluster size
    inflights: list[int]
    tests: list[str]  # in the order run on each fresh system (get after set finds keys)
    value_size: int
    keys: int
    repeats: int
    warmup: float
    window: float
    follower: bool = True  # also a row through a follower's RESP port
    makers: dict[str, Callable[[], RespTarget]] = field(default_factory=dict)  # default: resp_targets


def resp_targets(c: RespComparison) -> dict[str, Callable[[], RespTarget]]:
    return {
        "raftproc": lambda: RaftprocResp(c.nodes, follower=c.follower),
        "redis-durable": lambda: RedisServer("redis-durable", durable=True),
        "redis-memory": lambda: RedisServer("redis-memory", durable=False),
    }


def resp_comparison(c: RespComparison) -> list[RespPoint]:
    """Every system at every point, `repeats` rounds, each round on fresh systems."""
    unknown = set(c.tests) - set(TESTS)
    if unknown:
        raise ValueError(f"unknown redis-benchmark tests {sorted(unknown)}; choose from {', '.join(TESTS)}")
    points: dict[tuple[str, str, int], RespPoint] = {}
    for _ in range(c.repeats):
        for make in (c.makers or resp_targets(c)).values():
            target = make()
            try:
                _measure_target(c, target, points)
            finally:
                target.close()
    return list(points.values())


def _measure_target(c: RespComparison, target: RespTarget, points: dict[tuple[str, str, int], RespPoint]) -> None:
    for inflight in c.inflights:
        for test in c.tests:
            for system, address in target.addresses().items():
                key = (system, test, inflight)
                if key not in points:
                    points[key] = _point(c, system, test, inflight)
                point = points[key]
                point.runs.append(_run(c, point, address, target.pids()))
                _say(point)


def _point(c: RespComparison, system: str, test: str, inflight: int) -> RespPoint:
    clients, pipeline = clients_and_pipeline(inflight)
    nodes = c.nodes if system.startswith("raftproc") else 1
    return RespPoint(system, nodes, clients * pipeline, c.value_size, c.keys, test=test, clients=clients, pipeline=pipeline)


def _run(c: RespComparison, p: RespPoint, address: Address | None, pids: list[int]) -> dict[str, Any]:
    try:
        inv = Invocation(require_pong(address, 5), p.test, p.clients, p.pipeline, max(100, 10 * p.inflight), p.value_size, p.keys)
        return measure_run(inv, pids, warmup=c.warmup, window=c.window)
    except BenchmarkFailed as e:
        return failed_run(str(e))


def _say(p: RespPoint) -> None:
    last = p.runs[-1]
    where = f"  {p.system:<23} {p.test:<5} c={p.clients:<3} P={p.pipeline:<3}"
    if last.get("error"):
        print(f"{where} FAILED: {last['error']}", flush=True)
    else:
        print(f"{where} {last['ops_per_s']:>9.0f} ops/s  p99 {last['p99_ms']:.2f} ms", flush=True)


def all_failures(points: list[RespPoint]) -> Iterator[str]:
    for p in points:
        for reason in p.failures():
            yield f"{p.system} {p.test} c={p.clients} P={p.pipeline}: {reason}"
