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

        def writes(total: int, fresh: bool, seed: int) -> None:
            """`total` acknowledged writes, in chunks sent to whichever node leads: on a
            loaded machine leadership may move, and the load generator does not retry."""
            done = 0
            for chunk in range(60):
                if done >= total:
                    return
                target = cluster.config.node(cluster.wait_for_leader(timeout=20)).client
                r = load(target, 64, 0.0, 120.0, 16, 1000, 8, seed * 1000 + chunk, count=min(10_000, total - done), fresh_clients=fresh)
                done += r["ops"]
            raise AssertionError(f"only {done} of {total} writes acknowledged")

        def rss() -> dict[int, float]:
            return {p.node_id: psutil.Process(p.pid).memory_info().rss / 2**20 for p in cluster.processes()}

        # The same number of writes from 8 clients first: the log, snapshots and
        # compaction reach their steady state, so what grows after is the sessions.
        writes(FRESH_CLIENTS, False, 1)
        before = rss()
        writes(FRESH_CLIENTS, True, 2)
        committed = cluster.node_status(cluster.wait_for_leader(timeout=20))["commit_index"]

        def applied_everywhere():
            statuses = [s for s in map(cluster.node_status, (1, 2, 3)) if s and s["last_applied"] >= committed]
            return statuses if len(statuses) == 3 else None

        statuses = wait_until(applied_everywhere, 30, "every node to apply every write")
        after = rss()
        growth = {n: round(after[n] - before[n], 1) for n in after}
        print(f"RSS MB before {before}, after {after}, growth {growth}")
        assert {s["sessions"] for s in statuses} == {MAX_SESSIONS}
        assert max(growth.values()) < 12, growth
    finally:
        cluster.down(timeout=3)
