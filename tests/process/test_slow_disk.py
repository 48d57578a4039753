"""A leader whose disk stalls does not stay leader: node 1 syncs on a thread, so its
loop keeps heartbeating while every fsync takes a second (the WAL's test-only slow
mode); it steps down (`leader_stepped_down`) once a sync runs past twice the
longest election timeout, another node leads, status on node 1 still answers, and
writes go on."""

from __future__ import annotations

import pytest
from conftest import log_events, make_cluster
from support import wait_until

from raftproc.client import Unknown
from raftproc.runtime.wal import SLOW_SYNC_ENV

pytestmark = pytest.mark.process


def test_a_leader_whose_fsync_stalls_steps_down(tmp_path):
    cluster = make_cluster(tmp_path, 3, background_sync=True)
    try:
        for n in (2, 3):
            cluster.start(n)
        slow = tmp_path / "slow-sync-ms"
        cluster.env = {SLOW_SYNC_ENV: str(slow)}
        cluster.start(1)
        cluster.env = {}
        client = cluster.client(timeout=20)
        client.set("before", "1")
        if cluster.wait_for_leader() != 1:
            client.transfer(1)
        slow.write_text("1000")  # from now on every fsync on node 1 takes a second more
        try:
            client.set("during", "x")  # makes node 1 sync
        except Unknown:
            pass  # it may or may not have been applied; it is not checked below
        wait_until(lambda: any(e["event"] == "leader_stepped_down" for e in log_events(cluster, 1)), 20, "node 1 to step down")
        stepped = next(e for e in log_events(cluster, 1) if e["event"] == "leader_stepped_down")
        assert "over twice the longest election timeout" in stepped["reason"]
        wait_until(lambda: (cluster.any_leader() or 1) != 1, 20, "another node to lead")
        assert cluster.node_status(1, timeout=2) is not None, "status answers while the disk is slow"
        client.set("after", "2")
        assert client.get("before") == "1" and client.get("after") == "2"
        client.close()
    finally:
        cluster.down(timeout=5)
