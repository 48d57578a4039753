"""The simulator's stable storage: what survives a crash of a simulated node.

It follows the same contract as the WAL (raftproc.core.ready): persisting a Ready
stores its hard state and replaces stored entries from the first one given. In the
simulator a write is durable the moment `persist` returns; a crash loses exactly what
the node held in memory and had not yet handed to `persist`.
"""

from __future__ import annotations

from raftproc.core.messages import Entry
from raftproc.core.ready import HardState, Ready


class MemoryStorage:
    __slots__ = ("hard_state", "entries")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []

    def persist(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            del self.entries[rd.entries[0].index - 1 :]
            self.entries.extend(rd.entries)

    def term_at(self, index: int) -> int | None:
        if index == 0:
            return 0
        if index <= len(self.entries):
            return self.entries[index - 1].term
        return None

    @property
    def last_index(self) -> int:
        return len(self.entries)
