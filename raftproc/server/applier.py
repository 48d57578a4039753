"""The Ready driver's state machine: committed entries applied to the key-value
store, and the clients waiting on them answered.

A write proposed on this node waits here under its log index until that index is
applied. If the entry there is ours (same term) the client gets the store's
result; if another leader's entry took the index, ours is gone for good
("failed"). A node that stops leading tells every waiting client "unknown": the
entry may still commit under the next leader.

Reads the core confirmed (ReadIndex or lease) wait until the store has applied
their index, then are answered from the store.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftproc.core.messages import Entry
from raftproc.core.node import RaftNode
from raftproc.core.ready import ReadState
from raftproc.core.types import LEADER
from raftproc.kv import redis
from raftproc.kv.commands import Command
from raftproc.kv.state_machine import OK, KeyValueStore
from raftproc.runtime.protocol import Outcome
from raftproc.server.members import MemberService
from raftproc.server.replies import Asker, Replies
from raftproc.server.trace import Tracer

Log = Callable[..., None]


@dataclass(slots=True, init=False)
class Waiting:
    term: int
    conn: Asker
    request_id: int
    # The command as proposed: the entry at this index and term holds exactly it (Log
    # Matching), so applying it needs no second decode of the bytes just encoded.
    command: Command | None

    def __init__(self, term: int, conn: Asker, request_id: int, command: Command | None = None) -> None:
        # By hand: one per write, and under mypyc a dataclass's generated __init__
        # stays interpreted.
        self.term = term
        self.conn = conn
        self.request_id = request_id
        self.command = command


@dataclass(frozen=True, slots=True)
class AskedRead:
    conn: Asker
    request_id: int
    key: str
    scan: tuple[str | None, int] | None = None  # a range read: (after, limit)
    redis: list[bytes] | None = None  # a Redis read command (raftproc.kv.redis), instead of the key


class Applier:
    def __init__(
        self,
        *,
        raft: RaftNode,
        kv: KeyValueStore,
        members: MemberService,
        replies: Replies,
        tracer: Tracer,
        on_applied: Callable[[bytes | None], None],
        log: Log,
    ) -> None:
        """`on_applied(command)` hears every applied command (the snapshot policy counts bytes)."""
        self.raft = raft
        self.kv = kv
        self.members = members
        self.replies = replies
        self.tracer = tracer
        self.on_applied = on_applied
        self.log = log
        self.waiting: dict[int, Waiting] = {}  # log index -> the client waiting for it
        self.proposals_failed = 0  # writes proposed here, then answered failed or unknown
        # Reads asked of the core (token -> who asked), and confirmed ones waiting
        # for their index to be applied (a heap by index).
        self.reads_asked: dict[int, AskedRead] = {}
        self._reads_confirmed: list[tuple[int, int, AskedRead]] = []

    # --- the driver's StateMachine ----------------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if entry.membership is not None:
                self._apply_membership(entry)
            else:
                self._apply_command(entry)

    def _apply_membership(self, entry: Entry) -> None:
        assert entry.membership is not None
        # The configuration took effect when it was appended; to the store it is a no-op.
        self.kv.apply(entry.index, None)
        self.log("config_applied", index=entry.index, membership=entry.membership.describe())
        self.kv.forget_incarnations(entry.membership.members)
        self.members.applied(entry.membership)

    def _apply_command(self, entry: Entry) -> None:
        waiting = self.waiting.pop(entry.index, None)
        proposed = waiting.command if waiting is not None and waiting.term == entry.term else None
        result = self.kv.apply(entry.index, entry.command, proposed)
        self.tracer.applied(entry)
        self.on_applied(entry.command)
        if waiting is None:
            return
        if waiting.term != entry.term:
            # Another leader's entry holds this index: ours is gone for good.
            self.proposals_failed += 1
            self.replies.answer(waiting.conn, waiting.request_id, status=Outcome.FAILED, error="overwritten by a newer leader")
        elif result is OK:
            self.replies.ok(waiting.conn, waiting.request_id)
        elif result is not None and result.get("session_expired"):
            self.replies.answer(waiting.conn, waiting.request_id, status=Outcome.SESSION_EXPIRED, error=result["error"])
        else:
            self.replies.answer(waiting.conn, waiting.request_id, status=Outcome.OK, result=result)

    def serve_reads(self, read_states: Sequence[ReadState]) -> None:
        """Confirmed reads wait until the store has applied their index."""
        for rs in read_states:
            asked = self.reads_asked.pop(rs.request, None)
            if asked is not None:
                heapq.heappush(self._reads_confirmed, (rs.index, rs.request, asked))
        confirmed, applied = self._reads_confirmed, self.kv.last_applied
        while confirmed and confirmed[0][0] <= applied:
            _, _, asked = heapq.heappop(confirmed)
            if asked.redis is not None:
                result = {"ok": True, "redis": [redis.execute(self.kv, asked.redis)]}
            elif asked.scan is not None:
                result = self.kv.scan(asked.key, *asked.scan)
            else:
                result = {"ok": True, "value": self.kv.data.get(asked.key)}
            self.replies.answer(asked.conn, asked.request_id, status=Outcome.OK, result=result)

    # --- who waits --------------------------------------------------------------------

    def wait_for(self, index: int, waiting: Waiting) -> None:
        self.waiting[index] = waiting

    def settle_leadership(self) -> None:
        """After a Ready: a node that no longer leads tells every waiting client."""
        if self.raft.role == LEADER:
            return
        if self.waiting:
            self.fail_waiting(Outcome.UNKNOWN, "leadership lost before commit")
        if self.reads_asked:
            # Reads the core had not confirmed died with the leadership; a read
            # changes nothing, so the client may simply ask the new leader.
            asked, self.reads_asked = self.reads_asked, {}
            for read in asked.values():
                self.replies.redirect(read.conn, read.request_id)

    def fail_waiting(self, status: Outcome, why: str) -> None:
        waiting, self.waiting = self.waiting, {}
        self.proposals_failed += len(waiting)
        for w in waiting.values():
            self.replies.answer(w.conn, w.request_id, status=status, error=why)
