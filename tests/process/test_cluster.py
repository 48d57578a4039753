"""Clusters of real node processes: writes, reads, kill -9 of the leader, restart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import log_events
from support import wait_until

from raftproc import build
from raftproc.client import ClientError

pytestmark = pytest.mark.process


@pytest.mark.parametrize("nodes, background_sync", [(3, False), (5, False), (3, True)])
def test_cluster_survives_leader_kill_and_converges(cluster_factory, nodes, background_sync):
    cluster = cluster_factory(nodes, background_sync=background_sync)
    client = cluster.client(timeout=15)
    acked = {}
    for i in range(20):
        client.set(f"k{i}", f"v{i}")
        acked[f"k{i}"] = f"v{i}"
    assert client.get("k7") == "v7"

    old = cluster.wait_for_leader()
    cluster.kill(old)
    new = cluster.wait_for_leader(timeout=10, other_than=old)
    assert new != old
    for i in range(20, 30):
        client.set(f"k{i}", f"v{i}")
        acked[f"k{i}"] = f"v{i}"
    client.delete("k0")
    del acked["k0"]

    cluster.start(old)
    statuses = cluster.wait_converged(timeout=15, state=True)
    assert len(statuses) == nodes
    assert len({s["state_digest"] for s in statuses}) == 1
    for key, value in acked.items():
        assert client.get(key) == value
    assert client.get("k0") is None
    client.close()
    events = {e["event"] for n in cluster.config.nodes for e in log_events(cluster, n)}
    assert {"became_leader", "election_started", "vote_granted", "wal_recovered", "peer_connected"} <= events


def test_every_node_runs_the_build_this_checkout_has(cluster_factory):
    """Compiled where scripts/compile.py compiled the checkout (scripts/test says which
    it expects), pure under RAFTPROC_PURE=1; status and node_started both tell."""
    expected = os.environ.get("RAFTPROC_EXPECT_BUILD") or build.BUILD
    cluster = cluster_factory(3)
    cluster.wait_for_leader()
    for n in cluster.config.nodes:
        assert cluster.node_status(n)["build"] == expected
        started = [e for e in log_events(cluster, n) if e["event"] == "node_started"]
        assert started and started[-1]["build"] == expected, started
    endpoints = ",".join(f"{a.client[0]}:{a.client[1]}" for a in cluster.config.nodes.values())
    shown = subprocess.run(
        [sys.executable, "-m", "raftproc.client", "--endpoints", endpoints, "status"], capture_output=True, text=True, timeout=60
    )
    rows = [line.split() for line in shown.stdout.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert shown.returncode == 0 and len(rows) == 3 and all(expected in row for row in rows), shown.stdout


def test_every_log_line_carries_the_raft_fields(cluster_factory):
    cluster = cluster_factory(3)
    client = cluster.client(timeout=10)
    client.set("a", "1")
    client.close()
    leader = cluster.wait_for_leader()
    lines = log_events(cluster, leader)
    assert lines
    for line in lines:
        assert {"ts", "node", "term", "role", "event"} <= set(line), line
        assert line["event"].islower() and " " not in line["event"]
    assert any(l["event"] == "became_leader" and l["role"] == "leader" for l in lines)


def test_follower_redirects_and_client_status(cluster_factory):
    from raftproc.client import Client

    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    follower = next(i for i in cluster.config.nodes if i != leader)
    # A client that only knows the follower is redirected to the leader.
    only = {follower: cluster.config.nodes[follower].client}
    c = Client(only, timeout=10)
    assert c.set("via-follower", "ok") == {"ok": True}
    # ... and remembers where the leader is, so it reaches it after its only
    # known node is gone (as after that node was removed from the cluster).
    assert c.addresses[leader] == cluster.config.nodes[leader].client
    status = c.status(follower)
    assert status["role"] == "follower" and status["leader"] == leader
    c.close()


def test_the_load_generator_aimed_at_a_follower_follows_its_redirect(cluster_factory):
    """A benchmark aimed at a node that is not (or no longer) the leader measures the
    leader, not a window of redirects: each connection moves where it is sent."""
    from raftproc.ops.loadgen import run as load

    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    follower = next(i for i in cluster.config.nodes if i != leader)
    result = load(cluster.config.nodes[follower].client, 16, 0.3, 1.0, 16, 100, 4, 1)
    assert result["redirects"] >= 4, result  # every connection moved (again if leadership moved meanwhile)
    assert result["ops"] > 0 and result["errors"] == 0, result


def test_paused_leader_is_replaced_and_rejoins_as_follower(cluster_factory):
    cluster = cluster_factory(3)
    client = cluster.client(timeout=15)
    client.set("before", "1")
    old = cluster.wait_for_leader()
    cluster.pause(old)
    new = cluster.wait_for_leader(other_than=old, timeout=10)
    client.set("during", "2")
    cluster.resume(old)
    wait_until(lambda: (cluster.node_status(old) or {}).get("role") == "follower", what="old leader steps down")
    statuses = cluster.wait_converged(timeout=10, state=True)
    assert len(statuses) == 3
    assert client.get("during") == "2" and new != old
    client.close()


def test_transfer_hands_leadership_to_the_chosen_node_without_an_election_timeout(cluster_factory):
    cluster = cluster_factory(3)
    client = cluster.client(timeout=15)
    client.set("a", "1")
    old = cluster.wait_for_leader()
    target = next(i for i in cluster.config.nodes if i != old)
    assert client.transfer(target) == target
    assert cluster.wait_for_leader() == target
    client.set("b", "2")
    assert client.get("a") == "1" and client.get("b") == "2"
    # Without a target the leader picks its most up-to-date follower.
    assert client.transfer() != target
    events = [e["event"] for e in log_events(cluster, target)]
    assert "leadership_transfer_received" in events
    client.close()


def test_a_long_lived_client_asks_a_restarted_node_for_status_again(cluster_factory):
    """The connection to the old process is dead after a restart: the call that finds
    it so fails and drops it, and the next one reconnects (status too, not only
    requests)."""
    cluster = cluster_factory(3)
    client = cluster.client(timeout=10)
    try:
        before = client.status(1)["pid"]
        cluster.restart(1)

        def answered():
            try:
                return client.status(1)
            except ClientError:
                return None

        after = wait_until(answered, 20, "node 1 to answer the same client again")
        assert after["pid"] != before and after["pid"] == cluster.process(1).pid
    finally:
        client.close()
