"""What an operator does to a running cluster through its leader: change its
membership (join, add, remove, rebuild a broken node), hand leadership over, and
restart every node in turn. A mixin of raftproc.ops.cluster.Cluster, which
supplies the process control (start, stop, graceful_stop), the client and the
status these build on, as raftproc.core.changes does for the Raft core."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from raftproc.config import Address, NodeAddress, to_toml
from raftproc.ops.certs import node_with_cert
from raftproc.ops.layout import free_ports
from raftproc.ops.logs import handover_gaps


class ClusterError(Exception):
    pass


class ClusterOperations:
    def removed(self) -> set[int]:
        """Nodes removed from the cluster: `up` leaves them stopped. They stay in the
        config file (its first configuration must never change)."""
        path = self.run_dir / "removed"
        return {int(x) for x in path.read_text().split()} if path.exists() else set()

    def _set_removed(self, ids: set[int]) -> None:
        (self.run_dir / "removed").write_text("".join(f"{i}\n" for i in sorted(ids)))

    def join(self, timeout: float = 60.0, *, place: Callable[[int], tuple[Address, Address]] | None = None) -> int:
        """Start a new node (the next free id; `place(id)` gives its peer and client
        addresses, free loopback ports by default) and add it: it joins as a
        learner, catches up, then votes. Returns its id."""
        self._leader_now("join")  # before anything is written or started
        cfg = self.config
        node_id = max(cfg.nodes) + 1
        metrics = None
        if place is None:
            peer_port, client_port, metrics_port = free_ports(3)
            peer, client, metrics = ("127.0.0.1", peer_port), ("127.0.0.1", client_port), ("127.0.0.1", metrics_port)
        else:
            peer, client = place(node_id)
        address = NodeAddress(node_id, peer, client, join=True, metrics=metrics)
        if cfg.tls is not None:
            address = node_with_cert(address, self.tls_dir)
        self.config_path.write_text(to_toml(replace(cfg, nodes={**cfg.nodes, node_id: address})))
        self.start(node_id)
        self.add(node_id, timeout)
        return node_id

    def add(self, node_id: int, timeout: float = 60.0) -> dict[str, Any]:
        """Add a node the config file lists (a removed one comes back with its data)."""
        self._known(node_id)
        a = self.config.node(node_id)
        if self.process(node_id).state != "running":
            self.start(node_id)
        self._set_removed(self.removed() - {node_id})
        c = self.client(timeout=timeout)
        try:
            return c.member("add", node_id, f"{a.peer[0]}:{a.peer[1]}", f"{a.client[0]}:{a.client[1]}")
        finally:
            c.close()

    def remove(self, node_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """Remove a node from the configuration (a leader hands over first), then stop it."""
        c = self.client(timeout=timeout)
        try:
            result = c.member("remove", node_id)
        finally:
            c.close()
        self._set_removed(self.removed() | {node_id})
        self.stop(node_id)
        return result

    def rebuild(self, node_id: int, timeout: float = 120.0) -> dict[str, Any]:
        """The way back for a node whose data cannot be trusted (a corrupt WAL, a lost
        or restored disk): remove it, wipe its data, start it as a new incarnation
        that waits, and add it, so it catches up from the leader (a snapshot when
        the log is compacted) and votes again. Refused when the voters left without
        it could not form a quorum: the removal itself would never commit."""
        self._known(node_id)
        self._leader_now(f"rebuilding node {node_id}")
        m = self.members()
        voters = set(m["voters"])
        if node_id in voters:
            rest = voters - {node_id}
            live = {v for v in rest if self.node_status(v) is not None}
            need = len(rest) // 2 + 1
            if len(live) < need:
                raise ClusterError(
                    f"rebuilding node {node_id} removes it first, and then only {len(live)} of the {len(rest)} voters left "
                    f"answer, fewer than the {need} a quorum needs: bring nodes {sorted(rest - live)} back first"
                )
        c = self.client(timeout=timeout)
        try:
            # Stopped before it is removed: once peers forget its incarnation, a redial
            # from the old process must not be the one they record.
            if self.process(node_id).state in ("running", "paused"):
                self.stop(node_id)
            if node_id in {int(n) for n in m["nodes"]}:
                c.member("remove", node_id)
            self.start(node_id, rebuild=True)
            a = self.config.node(node_id)
            self._set_removed(self.removed() - {node_id})
            return c.member("add", node_id, f"{a.peer[0]}:{a.peer[1]}", f"{a.client[0]}:{a.client[1]}")
        finally:
            c.close()

    def members(self) -> dict[str, Any]:
        c = self.client()
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
        leader = self._leader_now("a rolling restart")
        running = [p.node_id for p in self.processes() if p.state == "running"]
        skipped = [i for i in sorted(self.config.nodes) if i not in running and i not in self.removed()]
        if skipped:
            say(f"nodes {skipped} are not running; they are left as they are")
        order = [i for i in running if i != leader] + [leader]
        for node_id in order:
            handed_to = self.graceful_stop(node_id)
            self.start(node_id)
            target = self.node_status(self.wait_for_leader(timeout=timeout), timeout=2.0)
            commit = target["commit_index"] if target else 0
            deadline = time.monotonic() + timeout
            while True:
                s = self.node_status(node_id)
                if s is not None and s["last_applied"] >= commit:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"node {node_id} did not catch up within {timeout}s after its restart")
                time.sleep(0.02)  # poll interval of a wait-until loop
            say(f"node {node_id} restarted" + (f" (handed leadership to node {handed_to})" if handed_to else ""))
        return {
            "order": order,
            "seconds": time.monotonic() - started,
            "handover_gaps_s": handover_gaps(sorted(self.config.log_dir.glob("node-*.jsonl")), since),
        }

    def transfer(self, target: int | None = None, timeout: float = 10.0) -> int:
        """Hand leadership to `target` (None: the leader picks its most up-to-date
        follower); returns the new leader."""
        if target is not None:
            self._known(target)
        self._leader_now("a leadership transfer")
        client = self.client(timeout=timeout)
        try:
            return client.transfer(target)
        finally:
            client.close()
