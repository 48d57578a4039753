"""What an operator does to a running cluster through its leader: change its
membership (join, add, remove, rebuild a broken node), hand leadership over, and
restart every node in turn. Built on the process control and status of
raftproc.ops.cluster.Cluster, which it reaches only through ClusterControl below,
and which offers these as its own methods."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from raftproc.client import Client
from raftproc.config import ClusterConfig, NodeAddress, to_toml
from raftproc.ops.certs import node_with_cert
from raftproc.ops.control import ClusterError, NodeProcess
from raftproc.ops.layout import free_ports
from raftproc.ops.logs import handover_gaps


class ClusterControl(Protocol):
    """What the operations need of the supervisor: the config, each node's process
    and status, a client, and which nodes the operator removed."""

    @property
    def config_path(self) -> Path: ...
    @property
    def config(self) -> ClusterConfig: ...
    @property
    def tls_dir(self) -> Path: ...
    def start(self, node_id: int, wait: float = 5.0, *, rebuild: bool = False) -> int: ...
    def stop(self, node_id: int, timeout: float = 5.0) -> None: ...
    def graceful_stop(self, node_id: int, timeout: float = 10.0) -> int | None: ...
    def process(self, node_id: int) -> NodeProcess: ...
    def processes(self) -> list[NodeProcess]: ...
    def client(self, **kw: Any) -> Client: ...
    def node_status(self, node_id: int, timeout: float = 0.5, *, state: bool = False) -> dict[str, Any] | None: ...
    def wait_for_leader(self, timeout: float = 10.0, *, other_than: int | None = None) -> int: ...
    def leader_now(self, what: str, timeout: float = 3.0) -> int: ...
    def check_known(self, node_id: int) -> None: ...
    def removed(self) -> set[int]: ...
    def mark_removed(self, node_id: int, removed: bool) -> None: ...


class ClusterOperations:
    """Each operation asks the leader through a client and waits for its answer;
    nodes are started and stopped through `cluster`."""

    def __init__(self, cluster: ClusterControl) -> None:
        self.cluster = cluster

    def join(self, timeout: float = 60.0, *, place: Callable[[int], NodeAddress] | None = None) -> int:
        """Start a new node (the next free id; `place(id)` gives its addresses, free
        loopback ports by default) and add it: it joins as a learner, catches up,
        then votes. Returns its id."""
        self.cluster.leader_now("join")  # before anything is written or started
        cfg = self.cluster.config
        node_id = max(cfg.nodes) + 1
        if place is None:
            peer, client, metrics, redis = (("127.0.0.1", port) for port in free_ports(4))
            address = NodeAddress(node_id, peer, client, join=True, metrics=metrics, redis=redis)
        else:
            address = replace(place(node_id), join=True)
        if cfg.tls is not None:
            address = node_with_cert(address, self.cluster.tls_dir)
        self.cluster.config_path.write_text(to_toml(replace(cfg, nodes={**cfg.nodes, node_id: address})))
        self.cluster.start(node_id)
        self.add(node_id, timeout)
        return node_id

    def add(self, node_id: int, timeout: float = 60.0) -> dict[str, Any]:
        """Add a node the config file lists (a removed one comes back with its data)."""
        self.cluster.check_known(node_id)
        a = self.cluster.config.node(node_id)
        if self.cluster.process(node_id).state != "running":
            self.cluster.start(node_id)
        self.cluster.mark_removed(node_id, False)
        c = self.cluster.client(timeout=timeout)
        try:
            return c.member("add", node_id, f"{a.peer[0]}:{a.peer[1]}", f"{a.client[0]}:{a.client[1]}")
        finally:
            c.close()

    def remove(self, node_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """Remove a node from the configuration (a leader hands over first), then stop it."""
        c = self.cluster.client(timeout=timeout)
        try:
            result = c.member("remove", node_id)
        finally:
            c.close()
        self.cluster.mark_removed(node_id, True)
        self.cluster.stop(node_id)
        return result

    def rebuild(self, node_id: int, timeout: float = 120.0) -> dict[str, Any]:
        """The way back for a node whose data cannot be trusted (a corrupt WAL, a lost
        or restored disk): remove it, wipe its data, start it as a new incarnation
        that waits, and add it, so it catches up from the leader (a snapshot when
        the log is compacted) and votes again. Refused when the voters left without
        it could not form a quorum: the removal itself would never commit."""
        self.cluster.check_known(node_id)
        self.cluster.leader_now(f"rebuilding node {node_id}")
        m = self.members()
        voters = set(m["voters"])
        if node_id in voters:
            rest = voters - {node_id}
            live = {v for v in rest if self.cluster.node_status(v) is not None}
            need = len(rest) // 2 + 1
            if len(live) < need:
                raise ClusterError(
                    f"rebuilding node {node_id} removes it first, and then only {len(live)} of the {len(rest)} voters left "
                    f"answer, fewer than the {need} a quorum needs: bring nodes {sorted(rest - live)} back first"
                )
        c = self.cluster.client(timeout=timeout)
        try:
            # Stopped before it is removed: once peers forget its incarnation, a redial
            # from the old process must not be the one they record.
            if self.cluster.process(node_id).state in ("running", "paused"):
                self.cluster.stop(node_id)
            if node_id in {int(n) for n in m["nodes"]}:
                c.member("remove", node_id)
            self.cluster.start(node_id, rebuild=True)
            a = self.cluster.config.node(node_id)
            self.cluster.mark_removed(node_id, False)
            return c.member("add", node_id, f"{a.peer[0]}:{a.peer[1]}", f"{a.client[0]}:{a.client[1]}")
        finally:
            c.close()

    def members(self) -> dict[str, Any]:
        c = self.cluster.client()
        try:
            return c.member("list")
        finally:
            c.close()

    def rolling_restart(self, timeout: float = 30.0, say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
        """Restart every node in turn, followers first and the leader last (handing
        over leadership first), each back and caught up before the next goes.
        Reports how long each handover left the cluster without a leader, from the
        nodes' logs: TimeoutNow sent by the old leader to `became_leader` of the new."""
        started = time.monotonic()
        since = datetime.now(UTC).isoformat()
        leader = self.cluster.leader_now("a rolling restart")
        running = [p.node_id for p in self.cluster.processes() if p.state == "running"]
        skipped = [i for i in sorted(self.cluster.config.nodes) if i not in running and i not in self.cluster.removed()]
        if skipped:
            say(f"nodes {skipped} are not running; they are left as they are")
        order = [i for i in running if i != leader] + [leader]
        for node_id in order:
            handed_to = self.cluster.graceful_stop(node_id)
            self.cluster.start(node_id)
            target = self.cluster.node_status(self.cluster.wait_for_leader(timeout=timeout), timeout=2.0)
            commit = target["commit_index"] if target else 0
            deadline = time.monotonic() + timeout
            while True:
                s = self.cluster.node_status(node_id)
                if s is not None and s["last_applied"] >= commit:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"node {node_id} did not catch up within {timeout}s after its restart")
                time.sleep(0.02)  # poll interval of a wait-until loop
            say(f"node {node_id} restarted" + (f" (handed leadership to node {handed_to})" if handed_to else ""))
        return {
            "order": order,
            "seconds": time.monotonic() - started,
            "handover_gaps_s": handover_gaps(sorted(self.cluster.config.log_dir.glob("node-*.jsonl")), since),
        }

    def transfer(self, target: int | None = None, timeout: float = 10.0) -> int:
        """Hand leadership to `target` (None: the leader picks its most up-to-date
        follower); returns the new leader."""
        if target is not None:
            self.cluster.check_known(target)
        self.cluster.leader_now("a leadership transfer")
        client = self.cluster.client(timeout=timeout)
        try:
            return client.transfer(target)
        finally:
            client.close()
