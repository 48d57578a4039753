"""The simulator's stable storage: what survives a crash of a simulated node.

It follows the same contract as the WAL and snapshot files (raftproc.core.ready):
persisting a Ready first installs its snapshot (dropping every entry), then stores
its hard state and replaces stored entries from the first one given. A snapshot's
data here is the applied entries themselves, so the checks can still read the term
of a compacted entry. In the simulator a write is durable the moment it returns; a
crash loses exactly what the node held in memory and had not yet handed over.
"""

from __future__ import annotations

from raftproc.core.messages import Entry, Membership, SnapshotMeta
from raftproc.core.ready import HardState, Ready


class MemoryStorage:
    __slots__ = ("hard_state", "entries", "snapshot", "snapshot_data")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.snapshot_data: tuple[Entry, ...] = ()  # entries 1..snapshot.index
        self.entries: list[Entry] = []  # entries after the snapshot

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    def persist(self, rd: Ready, snapshot_data: tuple[Entry, ...] | None = None) -> None:
        if rd.snapshot is not None:
            assert snapshot_data is not None and len(snapshot_data) == rd.snapshot.index
            self.snapshot, self.snapshot_data = rd.snapshot, snapshot_data
            self.entries = []
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            # The entries replace everything from the first on, past the snapshot too:
            # a background write may land after a local snapshot already covers them
            # (as the WAL's replay does, raftproc.runtime.wal).
            base = self.snapshot_index
            del self.entries[max(rd.entries[0].index - base - 1, 0) :]
            self.entries.extend(e for e in rd.entries if e.index > base)

    def save_snapshot(self, meta: SnapshotMeta, data: tuple[Entry, ...]) -> None:
        """A local snapshot of applied state: entries it covers leave the log."""
        drop = meta.index - self.snapshot_index
        self.snapshot, self.snapshot_data = meta, data
        del self.entries[:drop]

    def term_at(self, index: int) -> int | None:
        if index == 0:
            return 0
        base = self.snapshot_index
        if index <= base:
            return self.snapshot_data[index - 1].term
        if index - base <= len(self.entries):
            return self.entries[index - base - 1].term
        return None

    def membership(self, bootstrap: Membership) -> Membership:
        """The configuration a node restarted from this storage would use."""
        for e in reversed(self.entries):
            if e.config is not None:
                return e.config
        return self.snapshot.membership if self.snapshot else bootstrap

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)
