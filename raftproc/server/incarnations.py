"""The leader puts every member's incarnation into the log.

A node records the incarnation of each peer it hears from (raftproc.runtime.identity),
but a peer that was down for another node's whole first life, or never dialled it,
has nothing to compare a wiped node's hello with. So the leader proposes an
`incarnation` entry for every member whose incarnation it knows (its own, and each
peer's as first heard) and the applied table (raftproc.kv.state_machine) still
lacks. Every node that applies the log can then refuse a node that came back with
other data, including a node it never met.
"""

from __future__ import annotations

from collections.abc import Callable

from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, NotLeader, TransferInProgress
from raftproc.kv.commands import Command
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime.identity import KnownPeers

RETRY_S = 2.0  # a proposal lost with a leadership change is proposed again after this


class IncarnationRegistry:
    def __init__(
        self,
        me: int,
        incarnation: int,
        raft: RaftNode,
        kv: KeyValueStore,
        known_peers: KnownPeers,
        clock: Callable[[], float],
        log: Callable[..., None],
    ) -> None:
        self.me = me
        self.incarnation = incarnation
        self.raft = raft
        self.kv = kv
        self.known_peers = known_peers
        self.clock = clock
        self.log = log
        self._proposed: dict[int, tuple[int, float]] = {}  # node -> (incarnation, when)

    def settle(self) -> None:
        """On the leader: propose what the table lacks (called every tick; cheap when
        nothing is missing)."""
        if self.raft.role != LEADER:
            self._proposed.clear()
            return
        members = self.raft.membership.members
        logged = self.kv.incarnations
        if len(logged) >= len(members) and all(m in logged for m in members):
            return
        known = {self.me: self.incarnation, **self.known_peers.seen}
        now = self.clock()
        for node in members:
            incarnation = known.get(node)
            if node in logged or incarnation is None:
                continue
            sent = self._proposed.get(node)
            if sent is not None and sent[0] == incarnation and now - sent[1] < RETRY_S:
                continue
            try:
                self.raft.propose(Command("incarnation", str(node), str(incarnation)).encode())
            except (NotLeader, TransferInProgress):
                return
            self._proposed[node] = (incarnation, now)
            self.log("incarnation_proposed", peer_id=node)
