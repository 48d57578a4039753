"""The exactly-once session table is bounded: 100,000 clients that each send one
write (each opening a session) grow no node's memory by 12 MB, and every node keeps
the same number of sessions, at most MAX_SESSIONS."""

from __future__ import annotations

import psutil
import pytest
from conftest import make_cluster
from support import wait_until

from raftproc.kv.commands import REGISTERED
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


def test_a_new_clients_first_write_during_a_failover_is_applied_once_and_answered(tmp_path):
    """The leader is paused; fresh clients, whose first attempt goes to it and times
    out, write through the new leader. Each is answered "ok" (never "session
    expired": the cluster never saw them), and each write is applied once."""
    cluster = make_cluster(tmp_path, 3, log_level="warning")
    try:
        cluster.up(wait=20)
        old = cluster.wait_for_leader(timeout=20)
        cluster.pause(old)
        for i in range(3):
            client = cluster.client(timeout=20.0, attempt_timeout=0.5)
            client._target = cluster.config.node(old).client  # the first attempt is lost in the pause
            client.set(f"fresh{i}", "v")
            assert client.client_id > REGISTERED and client.answered_by != old
            assert client.get(f"fresh{i}") == "v"
            client.close()
        cluster.resume(old)
        statuses = cluster.wait_converged(timeout=20, state=True)
        assert len({s["state_digest"] for s in statuses}) == 1
    finally:
        cluster.down(timeout=3)
