"""A node restarted on a wiped data directory under its old id has forgotten its
votes and the entries it acknowledged. Its peers know it by the incarnation it
first said hello with and refuse it, so its vote cannot elect a leader that
lacks a committed write (raftproc.runtime.identity)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import log_events
from support import wait_until

from raftproc.runtime.identity import IDENTITY_FILE, KnownPeers

pytestmark = pytest.mark.process


def count(cluster, node: int, event: str) -> int:
    return sum(1 for e in log_events(cluster, node) if e["event"] == event)


def test_wiped_voter_cannot_help_elect_a_leader_that_lacks_a_committed_write(cluster_factory):
    cluster = cluster_factory(5)
    leader = cluster.wait_for_leader()
    followers = [n for n in range(1, 6) if n != leader]
    behind, (wiped, other) = followers[:2], followers[2:]
    client = cluster.client(timeout=10)
    try:
        client.set("warm", "up")
        cluster.wait_converged(10)
        # The check rests on each peer having heard the node's first hello (recorded in
        # its peers file): wait until every node knows every other's incarnation.
        ids = set(cluster.config.nodes)
        wait_until(
            lambda: all(set(KnownPeers(cluster.config.node_data_dir(n)).seen) >= ids - {n} for n in ids),
            20,
            "every node to have recorded every other's incarnation",
        )
        for n in behind:
            cluster.kill(n)  # down, not paused: a paused node still gets the bytes sent to it
        # Committed on the leader, `wiped` and `other` only: a majority of five.
        client.set("x", "committed")
        cluster.kill(wiped)
        shutil.rmtree(cluster.config.node_data_dir(wiped))
        cluster.kill(leader)
        cluster.kill(other)
        # Left: the wiped node (empty log) and two that never got x. Without the
        # check, the wiped node's vote makes one of those two leader, and x is lost.
        survivors = (wiped, *behind)
        leaders_before = {n: count(cluster, n, "became_leader") for n in survivors}
        rounds_before = sum(count(cluster, n, "pre_vote_started") for n in behind)
        cluster.start(wiped)
        for n in behind:
            cluster.start(n)

        def elected() -> bool:
            return {n: count(cluster, n, "became_leader") for n in survivors} != leaders_before

        wait_until(
            lambda: elected() or sum(count(cluster, n, "pre_vote_started") for n in behind) >= rounds_before + 6,
            20,
            "several election rounds among the wiped node and the two behind",
        )
        assert not elected(), "a leader was elected with the wiped node's vote"
        # The nodes that hold x come back; x is still there.
        cluster.start(leader)
        cluster.start(other)
        assert cluster.wait_for_leader(20) in (leader, other)
        assert client.get("x") == "committed"
    finally:
        client.close()
    refusal = next(e for e in log_events(cluster, behind[0]) if e["event"] == "peer_refused" and e["peer_id"] == wiped)
    assert "came back with other data" in refusal["reason"] and "rebuild" in refusal["reason"]
    # The wiped node was told why, and says so in its own log.
    told = [e for e in log_events(cluster, wiped) if e["event"] == "refused_by_peer"]
    assert {e["peer_id"] for e in told} >= set(behind) and all("rebuild" in e["reason"] for e in told)


def test_a_peer_that_never_met_the_node_refuses_it_wiped_by_what_the_log_recorded(cluster_factory):
    """The hole of the first-heard record: node 3 is down for node 2's whole first
    life. The leader put node 2's incarnation in the log, and node 3 applies it when
    it first starts, so it refuses node 2 coming back wiped, though it never met it."""
    cluster = cluster_factory(3, start=False)
    for n in (1, 2):
        cluster.start(n)
    client = cluster.client(timeout=20)
    try:
        client.set("first", "life")
        wait_until(
            lambda: all((s := cluster.node_status(n)) and s["incarnations_logged"] >= 2 for n in (1, 2)),
            20,
            "nodes 1 and 2 to have their incarnations in the log",
        )
        cluster.stop(2)
        shutil.rmtree(cluster.config.node_data_dir(2))
        cluster.start(3)  # first start ever: it never heard node 2's first hello
        cluster.wait_for_leader(20)
        wait_until(lambda: (s := cluster.node_status(3)) and s["incarnations_logged"] >= 2, 20, "node 3 to apply the incarnations")
        assert 2 not in KnownPeers(cluster.config.node_data_dir(3)).seen, "node 3 never met node 2 itself"
        cluster.start(2)
        refusal = wait_until(
            lambda: next((e for e in log_events(cluster, 3) if e["event"] == "peer_refused" and e["peer_id"] == 2), None),
            20,
            "node 3 to refuse the wiped node 2",
        )
        assert "log recorded" in refusal["reason"] and "rebuild" in refusal["reason"]
    finally:
        client.close()


def test_data_directory_of_another_node_refuses_to_start(cluster_factory):
    cluster = cluster_factory(3)
    one, two = cluster.config.node_data_dir(1), cluster.config.node_data_dir(2)
    # up() returns once two of three elect a leader; a node slow to start may not
    # have written its identity yet (seen on a loaded machine).
    wait_until(lambda: (one / IDENTITY_FILE).exists(), 20, "node 1 to write its identity")
    cluster.down()
    shutil.rmtree(two)
    shutil.copytree(one, two)
    r = subprocess.run(
        [sys.executable, "-m", "raftproc.node", "--id", "2", "--config", str(cluster.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert "holds node 1's data, not node 2's" in r.stderr
