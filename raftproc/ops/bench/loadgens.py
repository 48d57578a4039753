"""Load generators: raftproc.ops.loadgen processes started with their flags, and
their results (the JSON line each prints last) gathered when they finish. Two
kinds of load: for a measurement window (run_loadgens), or a number of writes
(write_load, to fill a store)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftproc.config import Address
from raftproc.ops.cluster import Cluster

# A flag's value: None or False leaves the flag out, True gives the bare flag.
Flag = str | int | float | bool | None


def start_loadgen(target: Address, flags: dict[str, Flag]) -> subprocess.Popen:
    """One generator against `target`; `flags` by their command-line names
    (`value-size`, `inflight`, ...)."""
    args = [sys.executable, "-m", "raftproc.ops.loadgen", "--target", f"{target[0]}:{target[1]}"]
    for name, value in flags.items():
        if value is None or value is False:
            continue
        args += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def results(procs: list[subprocess.Popen], timeout: float) -> list[dict[str, Any]]:
    """Each generator's result, in order; a generator that fails fails the measurement."""
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"load generator failed: {stderr.strip()[-500:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@dataclass(frozen=True)
class Load:
    """What the generators of one measurement do: `inflight` requests outstanding in
    all (or an open loop at `rate` ops/s in all), split over `generators` processes,
    measured over `window` seconds after `warmup`."""

    inflight: int
    generators: int
    warmup: float
    window: float
    value_size: int = 64
    keys: int = 1000
    protocol: str = "raftproc"  # raftproc | etcd
    rate: float = 0.0
    read: str = ""  # gets with this read mode (log | index | lease) instead of sets
    config: Path | None = None  # a cluster config: its TLS client certificate


def run_loadgens(target: Address, load: Load) -> list[dict[str, Any]]:
    """Each generator's result for `load` against `target`."""
    gens = min(load.generators, load.inflight)
    flags: dict[str, Flag] = {
        "inflight": max(1, load.inflight // gens),
        "connections": max(1, min(16, load.inflight // gens)),
        "warmup": load.warmup,
        "window": load.window,
        "value-size": load.value_size,
        "keys": load.keys,
        "protocol": load.protocol,
        "rate": load.rate / gens,
        "read": load.read or None,
        "config": str(load.config) if load.config else None,
    }
    procs = [start_loadgen(target, {**flags, "seed": g + 1}) for g in range(gens)]
    return results(procs, timeout=load.warmup + load.window + 60)


def write_load(
    cluster: Cluster, count: int, *, unique: bool, keys: int = 1000, generators: int = 4, inflight: int = 64, value_size: int = 16
) -> float:
    """`count` writes through `generators` closed-loop load generators; returns ops/s."""
    leader = cluster.wait_for_leader(timeout=30)
    per = count // generators
    flags: dict[str, Flag] = {
        "inflight": inflight,
        "connections": 8,
        "count": per,
        "window": 1800,
        "value-size": value_size,
        "keys": keys,
        "unique": unique,
    }
    procs = [start_loadgen(cluster.config.nodes[leader].client, {**flags, "seed": g + 1}) for g in range(generators)]
    done = results(procs, timeout=1900)
    for result in done:
        if result["ops"] + result["errors"] < per or result["errors"]:
            raise RuntimeError(f"load generator finished {result['ops']} of {per} writes, {result['errors']} errors")
    return sum(result["ops_per_s"] for result in done)
