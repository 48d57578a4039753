"""A follower far behind on large values catches up: appends are capped in bytes,
so no AppendEntries outgrows the frame limit (before the cap, 400 values of 100 KB
made a 40 MB message the follower refused forever, and elections churned)."""

from __future__ import annotations

import time

import pytest
from support import wait_until

pytestmark = pytest.mark.process


def test_follower_behind_400_writes_of_100kb_catches_up(cluster_factory):
    cluster = cluster_factory(3, max_frame=16 * 1024 * 1024)
    leader = cluster.wait_for_leader()
    behind = next(n for n in cluster.config.nodes if n != leader)
    cluster.kill(behind)
    client = cluster.client(timeout=20)
    value = "v" * 100_000
    for i in range(400):
        client.set(f"k{i}", value)
    goal = max(s["commit_index"] for s in (cluster.node_status(n) for n in cluster.config.nodes if n != behind) if s)
    started = time.monotonic()
    cluster.start(behind)
    wait_until(lambda: (cluster.node_status(behind) or {}).get("last_applied", 0) >= goal, 30, "the follower to catch up")
    print(f"caught up {goal} entries of 100 KB in {time.monotonic() - started:.1f} s")
    assert client.get("k399") == value
    client.close()
