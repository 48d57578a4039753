"""Real node processes on loopback, on free ports (raftproc.ops.layout.free_ports),
in a temporary run directory per test. Every wait is a condition polled against a
deadline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftproc.ops.cluster import Cluster
from raftproc.ops.layout import local_config


def make_cluster(tmp_path: Path, nodes: int, *, tls: bool = False, **overrides) -> Cluster:
    run = tmp_path / "run"
    cluster = Cluster(run)
    cluster.create(local_config(nodes, run / "data", run / "logs", **overrides), tls=tls)
    return cluster


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def factory(nodes: int = 3, *, start: bool = True, **overrides) -> Cluster:
        c = make_cluster(tmp_path / f"c{len(made)}", nodes, **overrides)
        made.append(c)
        if start:
            c.up(wait=20)
        return c

    yield factory
    for c in made:
        c.down(timeout=3)


def log_events(cluster: Cluster, node_id: int) -> list[dict]:
    import json

    path = cluster.config.node_log_file(node_id)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
