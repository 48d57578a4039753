"""Tracing one write through Raft, as each node sees it, into its JSON log.

A client marks a write (`python -m raftproc.client set x 10 --trace`); the mark
travels in the log entry (raftproc.kv.commands.is_traced), so every node recognises
the entry without any message of its own. Each node then logs, once each:

    trace_appended       the leader proposed it, or a follower appended it (index, term)
    trace_sent           the leader sent the AppendEntries carrying it (to peer)
    trace_acknowledged   a follower told the leader it holds it, after its fsync
    trace_ack_received   the leader heard that follower's acknowledgement
    trace_committed      the node's commit index reached it (on the leader: a majority holds it)
    trace_applied        the node applied it to its key-value store

`supervisor.py timeline` (raftproc.ops.timeline) puts these and the election that
made the leader back in order. Untraced writes cost one byte comparison per entry
appended or applied; everything else runs only while a traced entry is in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftproc.core.messages import AppendEntries, AppendEntriesResponse, Entry
from raftproc.kv.commands import Command, is_traced

Log = Callable[..., None]
MAX_WATCHED = 16  # traced entries followed at once; the oldest is dropped past this


@dataclass
class _Watch:
    command: str
    sent_to: set[int] = field(default_factory=set)
    acked_by: set[int] = field(default_factory=set)
    acknowledged: bool = False
    committed: bool = False
    applied: bool = False


class Tracer:
    def __init__(self, me: int, log: Log) -> None:
        self.me = me
        self.log = log
        self.watching: dict[int, _Watch] = {}  # index -> what was logged of it so far

    def proposed(self, index: int, term: int, command: Command) -> None:
        """The leader appended a traced write to its log."""
        self._watch(index, command.describe())
        self.log("trace_appended", index=index, entry_term=term, command=self.watching[index].command, by="leader")

    def _watch(self, index: int, command: str) -> None:
        if len(self.watching) >= MAX_WATCHED:
            del self.watching[min(self.watching)]
        self.watching[index] = _Watch(command)

    def appended(self, entries: Sequence[Entry], leader: int | None) -> None:
        """Entries about to be written on this node (a follower's, from its leader)."""
        for e in entries:
            if is_traced(e.command) and e.index not in self.watching:
                self._watch(e.index, _describe(e.command))
                self.log(
                    "trace_appended", index=e.index, entry_term=e.term, command=self.watching[e.index].command, by="follower", leader=leader
                )

    def sending(self, msg: Any) -> None:
        if not self.watching:
            return
        if isinstance(msg, AppendEntries) and msg.entries:
            first, last = msg.entries[0].index, msg.entries[-1].index
            for index, w in self.watching.items():
                if first <= index <= last and msg.dst not in w.sent_to:
                    w.sent_to.add(msg.dst)
                    self.log("trace_sent", index=index, peer=msg.dst, command=w.command)
        elif isinstance(msg, AppendEntriesResponse) and msg.success:
            for index, w in self.watching.items():
                if msg.match_index >= index and not w.acknowledged:
                    w.acknowledged = True
                    self.log("trace_acknowledged", index=index, leader=msg.dst, command=w.command)

    def received(self, msg: Any) -> None:
        if not self.watching or not isinstance(msg, AppendEntriesResponse) or not msg.success:
            return
        for index, w in list(self.watching.items()):
            if msg.match_index >= index and msg.src not in w.acked_by:
                w.acked_by.add(msg.src)
                self.log("trace_ack_received", index=index, peer=msg.src, acks=len(w.acked_by), command=w.command)
                if w.applied and w.sent_to <= w.acked_by:
                    del self.watching[index]

    def progressed(self, commit_index: int) -> None:
        for index, w in self.watching.items():
            if commit_index >= index and not w.committed:
                w.committed = True
                self.log("trace_committed", index=index, commit_index=commit_index, command=w.command)

    def applied(self, entry: Entry) -> None:
        if not is_traced(entry.command):
            return
        w = self.watching.get(entry.index)
        if w is not None and not w.committed:
            w.committed = True
            self.log("trace_committed", index=entry.index, commit_index=entry.index, command=w.command)
        self.log("trace_applied", index=entry.index, command=w.command if w else _describe(entry.command))
        if w is not None:
            w.applied = True
            if w.sent_to <= w.acked_by:  # a leader still waiting for acknowledgements keeps watching
                del self.watching[entry.index]


def _describe(command: bytes | None) -> str:
    try:
        return Command.decode(command).describe()  # type: ignore[arg-type]
    except Exception:
        return "(undecodable)"
