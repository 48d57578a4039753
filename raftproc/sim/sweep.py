"""Run many seeds, spread over processes; each failure comes back as its replay text."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor

from raftproc.sim.cluster import (
    LivenessViolation,
    SafetyViolation,
    SimConfig,
    Simulation,
)

CLUSTER_SIZES = (3, 5, 7)


def run_one(seed: int, nodes: int, steps: int) -> str | None:
    try:
        Simulation(seed, SimConfig(nodes=nodes, steps=steps)).run()
    except (SafetyViolation, LivenessViolation) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _run_chunk(args: tuple[list[int], int]) -> list[str]:
    seeds, steps = args
    out = []
    for seed in seeds:
        nodes = CLUSTER_SIZES[seed % len(CLUSTER_SIZES)]
        failure = run_one(seed, nodes, steps)
        if failure:
            out.append(failure)
    return out


def sweep(seeds: Iterable[int], *, steps: int, workers: int | None = None) -> list[str]:
    """Each seed runs once, on 3, 5 or 7 nodes by seed % 3. Returns the failures."""
    seeds = list(seeds)
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return _run_chunk((seeds, steps))
    chunks = [(seeds[i :: workers * 4], steps) for i in range(workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        return [f for part in pool.map(_run_chunk, chunks) for f in part]
