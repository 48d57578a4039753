"""The exactly-once session table is bounded: 100,000 clients that each send one
write (each opening a session) grow no node's memory by 12 MB, and every node keeps
the same number of sessions, at most MAX_SESSIONS."""

from __future__ import annotations

import psutil
import pytest

from conftest import make_cluster, wait_until
from raftproc.kv.state_machine import MAX_SESSIONS
from raftproc.ops.loadgen import run as load

pytestmark = pytest.mark.process

FRESH_CLIENTS = 100_000


def test_a_hundred_thousand_fresh_clients_grow_no_nodes_memory_by_12_mb(tmp_path):
    cluster = make_cluster(tmp_path, 3, log_level="warning")
    try:
        cluster.up(wait=20)
        target = cluster.config.node(cluster.wait_for_leader(timeout=20)).client

        def writes(count: int, fresh: bool, seed: int) -> None:
            r = load(target, 64, 0.0, 120.0, 16, 1000, 8, seed, count=count, fresh_clients=fresh)
            assert r["ops"] == count and r["errors"] == 0, r

        def rss() -> dict[int, float]:
            return {p.node_id: psutil.Process(p.pid).memory_info().rss / 2**20 for p in cluster.processes()}

        # The same number of writes from 8 clients first: the log, snapshots and
        # compaction reach their steady state, so what grows after is the sessions.
        writes(FRESH_CLIENTS, False, 1)
        before = rss()
        writes(FRESH_CLIENTS, True, 2)
        def applied_everywhere():
            statuses = [s for s in map(cluster.node_status, (1, 2, 3)) if s and s["last_applied"] >= 2 * FRESH_CLIENTS]
            return statuses if len(statuses) == 3 else None

        statuses = wait_until(applied_everywhere, 30, "every node to apply every write")
        after = rss()
        growth = {n: round(after[n] - before[n], 1) for n in after}
        print(f"RSS MB before {before}, after {after}, growth {growth}")
        assert {s["sessions"] for s in statuses} == {MAX_SESSIONS}
        assert max(growth.values()) < 12, growth
    finally:
        cluster.down(timeout=3)
