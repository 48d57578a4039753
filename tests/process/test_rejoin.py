"""A node cut off by a partition rejoins without disrupting the leader (PreVote and
CheckQuorum), on real processes in network namespaces."""

from __future__ import annotations

import sys
import time

import pytest

from conftest import wait_until
from raftproc.config import ClusterConfig, NodeAddress
from raftproc.ops.cluster import Cluster
from raftproc.ops.netns import NetnsLab, available

pytestmark = pytest.mark.process


def test_partitioned_follower_rejoins_without_a_new_term(tmp_path):
    ok, why = available()
    if not ok:
        pytest.skip(f"partitions need network namespaces: {why}")
    lab = NetnsLab(3)
    lab.setup()
    cfg = ClusterConfig(
        nodes={i: NodeAddress(i, (lab.addr(i), 7100), (lab.addr(i), 7200)) for i in (1, 2, 3)},
        data_dir=tmp_path / "data", log_dir=tmp_path / "logs",
    )
    cluster = Cluster(tmp_path / "run", launcher=lab.launcher())
    cluster.create(cfg)
    try:
        cluster.up(wait=20)
        leader = cluster.wait_for_leader()
        term = cluster.node_status(leader)["term"]
        lone = next(i for i in (1, 2, 3) if i != leader)
        for other in (1, 2, 3):
            if other != lone:
                lab.cut(lone, other)
                lab.cut(other, lone)
        # Several election timeouts (150-300 ms) alone; the lone node asks for
        # pre-votes that cannot arrive, so its term stays where it was.
        deadline = time.monotonic() + 2.0
        wait_until(lambda: time.monotonic() > deadline, timeout=5, what="the partition to last 2 s")
        assert cluster.node_status(lone)["term"] == term
        lab.heal_cuts()
        wait_until(lambda: (cluster.node_status(lone) or {}).get("leader") == leader, what="the lone node follows again")
        client = cluster.client(timeout=10)
        client.set("after-rejoin", "1")
        client.close()
        assert cluster.wait_for_leader() == leader
        assert cluster.node_status(leader)["term"] == term  # nobody was disrupted
    finally:
        cluster.down(timeout=3)
        lab.teardown()
