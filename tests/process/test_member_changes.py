"""Membership changes on real processes while clients write: a new node joins (as
a learner, through a snapshot, then votes), the leader is removed, a node is
replaced; no acknowledged write is lost and no write fails."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from conftest import log_events
from support import wait_until

from raftproc.client import ClientError
from raftproc.config import to_toml

pytestmark = pytest.mark.process


class Writers:
    """Clients writing until told to stop (bounded in time and count)."""

    def __init__(self, cluster, n: int = 2) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.acked: dict[str, str] = {}
        self.count = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._write, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _write(self, n: int) -> None:
        client = self.cluster.client(timeout=15)
        deadline = time.monotonic() + 120
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline and i < 100_000:
            key, value = f"w{n}-{i % 40}", str(i)
            try:
                client.set(key, value)
                self.acked[key] = value
                self.count += 1
            except ClientError as e:
                self.errors.append(f"{key}={value}: {e}")
            i += 1
        client.close()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_add_remove_and_replace_nodes_while_clients_write(cluster_factory):
    cluster = cluster_factory(3, snapshot_entries=200)
    writers = Writers(cluster)
    try:
        wait_until(lambda: writers.count >= 500, 30, "writes enough for a snapshot before the first change")
        # Grow 3 -> 4: node 4 starts empty, the log is compacted by now, so it
        # catches up by InstallSnapshot as a learner before it votes.
        new = cluster.join()
        assert new == 4
        members = cluster.members()
        assert members["voters"] == [1, 2, 3, 4] and members["learners"] == []
        events = [e["event"] for e in log_events(cluster, 4)]
        assert "snapshot_installed" in events
        # Remove the leader itself: it hands over, then stops.
        leader = cluster.wait_for_leader()
        cluster.remove(leader)
        assert leader not in cluster.members()["voters"]
        assert "leader_removed" in [e["event"] for e in log_events(cluster, leader)]
        # Replace a follower by a new node.
        new_leader = cluster.wait_for_leader()
        victim = next(v for v in cluster.members()["voters"] if v != new_leader)
        replacement = cluster.join()
        cluster.remove(victim)
        assert sorted(cluster.members()["voters"]) == sorted({1, 2, 3, 4, replacement} - {leader, victim})
        done = writers.count
        wait_until(lambda: writers.count >= done + 100, 20, "writes after the changes")
    finally:
        writers.finish()
    assert not writers.errors, writers.errors[:5]
    statuses = cluster.wait_converged(20)
    assert {s["node"] for s in statuses} == set(cluster.members()["voters"])
    client = cluster.client(timeout=10)
    try:
        for key, value in writers.acked.items():
            assert client.get(key) == value
    finally:
        client.close()


def test_member_commands_answer_clearly(cluster_factory):
    cluster = cluster_factory(3)
    client = cluster.client(timeout=5)
    try:
        leader = cluster.wait_for_leader()
        listing = client.member("list")
        assert listing["leader"] == leader and listing["voters"] == [1, 2, 3]
        assert set(listing["nodes"]) == {1, 2, 3} and all(n["role"] == "voter" for n in listing["nodes"].values())
        with pytest.raises(ClientError, match="member at another address"):
            client.member("add", 2, "127.0.0.1:1", "127.0.0.1:2")
        # Removing a node that is not a member is a mistake worth hearing about (issue 15:
        # it used to answer OK), and it changes nothing.
        with pytest.raises(ClientError, match="node 9 is not a member"):
            client.member("remove", 9)
        assert client.member("list")["voters"] == [1, 2, 3]
    finally:
        client.close()


def test_restarted_node_reaches_an_added_node_its_config_file_does_not_list(cluster_factory):
    """The addresses of added nodes travel in configuration entries, so an operator's
    config file may list only the first members: a node restarted with such a file
    learns the new node's address from its own WAL."""
    cluster = cluster_factory(3)
    new = cluster.join()
    client = cluster.client(timeout=10)
    client.set("before", "1")
    full = cluster.config_path.read_text()
    cfg = cluster.config
    try:
        cluster.config_path.write_text(to_toml(replace(cfg, nodes={i: a for i, a in cfg.nodes.items() if i != new})))
        follower = next(i for i in (1, 2, 3) if i != cluster.wait_for_leader())
        cluster.restart(follower)
        wait_until(
            lambda: (cluster.node_status(follower) or {}).get("membership", {}).get("voters") == [1, 2, 3, new],
            20,
            "restarted node back with the 4-voter configuration",
        )
        learned = [e for e in log_events(cluster, follower) if e["event"] == "peer_address_learned"]
        assert learned and learned[-1]["peer_id"] == new
        client.set("after", "2")
        wait_until(
            lambda: (cluster.node_status(follower) or {}).get("last_applied", 0) >= (cluster.node_status(new) or {}).get("commit_index", 1),
            20,
            "restarted node applies what the cluster commits",
        )
    finally:
        client.close()
        cluster.config_path.write_text(full)  # so teardown stops node 4 too
