"""What the node says about itself: the status answer, the metrics reading and
its health (GET /health), read from the rooms at that moment."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from raftproc import build
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime.wal import WriteAheadLog
from raftproc.server.alarm import DivergenceAlarm
from raftproc.server.applier import Applier
from raftproc.server.disk import DiskFreeze
from raftproc.server.members import membership_fields
from raftproc.server.metrics import Reading
from raftproc.server.snapshots import Snapshots
from raftproc.server.transport import PeerTransport

HEALTH_APPLY_WINDOW = 10.0  # seconds a node may hold committed entries unapplied and still be healthy


class NodeStatus:
    def __init__(
        self,
        *,
        me: int,
        raft: RaftNode,
        kv: KeyValueStore,
        wal: WriteAheadLog,
        snapshots: Snapshots,
        transport: PeerTransport,
        applier: Applier,
        disk: DiskFreeze,
        alarm: DivergenceAlarm,
        clock: Callable[[], float],
    ) -> None:
        self.me = me
        self.raft = raft
        self.kv = kv
        self.wal = wal
        self.snapshots = snapshots
        self.transport = transport
        self.applier = applier
        self.disk = disk
        self.alarm = alarm
        self.clock = clock
        self.leader_changes = 0
        self._leader_seen = raft.leader_id
        self._applied_seen = (kv.last_applied, clock())  # (index, when it last moved)

    def note_progress(self) -> None:
        """Each loop pass: count leader changes, and when the store last applied."""
        leader = self.raft.leader_id
        if leader != self._leader_seen:
            if leader is not None:
                self.leader_changes += 1
            self._leader_seen = leader
        if self.kv.last_applied != self._applied_seen[0]:
            self._applied_seen = (self.kv.last_applied, self.clock())

    def reading(self, client_connections: int) -> Reading:
        """The node as a scrape sees it (raftproc.server.metrics)."""
        r = self.raft
        return Reading(
            node=self.me,
            term=r.current_term,
            is_leader=r.role == LEADER,
            has_leader=r.leader_id is not None,
            leader_changes=self.leader_changes,
            committed=r.commit_index,
            applied=self.kv.last_applied,
            pending=len(self.applier.waiting),
            failed=self.applier.proposals_failed,
            client_connections=client_connections,
            disk_full=self.disk.frozen,
            fsync=self.wal.sync_latency,
            snapshot_save=self.snapshots.save_latency,
            peer_rtt=dict(self.transport.rtt),
            health_problem=self.health_problem(),
            diverged=self.alarm.describe() is not None,
        )

    def health_problem(self) -> str | None:
        """Why this node is unhealthy, or None: it knows a leader, can write its disk,
        and has applied what is committed or applied something within HEALTH_APPLY_WINDOW."""
        alarm = self.alarm.describe()
        if alarm is not None:
            return alarm
        if self.disk.frozen:
            return "disk full: writes wait for room"
        if self.raft.leader_id is None:
            return "no leader known"
        behind = self.raft.commit_index - self.kv.last_applied
        if behind > 0 and self.clock() - self._applied_seen[1] > HEALTH_APPLY_WINDOW:
            return f"{behind} committed entries not applied for {HEALTH_APPLY_WINDOW:.0f} s"
        return None

    def status(self, state: bool = False) -> dict[str, Any]:
        """`state`: include the state digest, which hashes every key and value."""
        r = self.raft
        return {
            "node": self.me,
            "pid": os.getpid(),
            "build": build.running(),
            "role": r.role,
            "term": r.current_term,
            "leader": r.leader_id,
            "commit_index": r.commit_index,
            "last_applied": self.kv.last_applied,
            "last_index": r.log.last_index,
            **self.snapshots.status(),
            "log_entries": len(r.log),
            "wal_bytes": self.wal.disk_bytes(),
            "transferring_to": r.transferee,
            "disk_full": self.disk.frozen,
            "membership": membership_fields(r.membership),
            "keys": len(self.kv.data),
            "sessions": len(self.kv.sessions),
            "incarnations_logged": len(self.kv.incarnations),
            "log_digest": log_digest(r, self.kv.last_applied),
            "diverged": self.alarm.describe(),
            **({"state_digest": self.kv.state_digest()} if state else {}),
        }


def log_digest(raft: RaftNode, applied: int) -> str:
    """Which log this node applied: the chain link at its applied index, equal on two
    nodes exactly when their logs agree up to there ("" where a snapshot from before
    the chain left the link unknown)."""
    link = raft.log.hash_at(applied)
    return link.hex() if link is not None else ""
