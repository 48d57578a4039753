"""The simulator's stable storage: what survives a crash of a simulated node, and
the writes that a crash loses.

It keeps the contract the WAL and snapshot files keep (raftproc.core.ready), and is
the Ready driver's LogStorage and Syncer (raftproc.server.driver) in the simulator:
`write` hands a Ready's hard state and entries over without making them durable;
they wait in `unsynced` until `sync` (inline, or a snapshot install) or until the
simulation completes a background sync with `sync_next`, one write at a time, as a
sync thread would report progress. A crash drops `unsynced` (`lose_unsynced`).
While `full`, a write that stores something fails with ENOSPC and leaves nothing,
as the WAL's does on a full disk.
Storing a write replaces stored entries from its first entry on. A snapshot's
data here is the applied entries themselves, so the checks can still read the term
of a compacted entry.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from raftproc.core.messages import Entry, Membership, NodeId, SnapshotMeta
from raftproc.core.ready import HardState, Ready


class MemoryStorage:
    __slots__ = ("hard_state", "entries", "snapshot", "snapshot_data", "unsynced", "written", "_term_vote", "on_store", "full")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.snapshot_data: tuple[Entry, ...] = ()  # entries 1..snapshot.index
        self.entries: list[Entry] = []  # entries after the snapshot
        self.unsynced: list[tuple[int, Ready]] = []  # (write number, Ready) handed over, not durable
        self.written = 0  # writes handed over since the process started
        self._term_vote: tuple[int, NodeId | None] = (0, None)  # of the newest write, as the WAL tracks it
        self.on_store: Callable[[Ready], None] | None = None  # called with each Ready as it becomes durable (the simulator's checks)
        self.full = False  # the disk is full: writes that store something fail

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    # --- the driver's side --------------------------------------------------------

    def write(self, rd: Ready) -> bool:
        if self.full and (rd.hard_state is not None or rd.entries):
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        self.written += 1
        if rd.hard_state is None and not rd.entries:
            return False
        self.unsynced.append((self.written, rd))
        hs = rd.hard_state
        promises = bool(rd.entries) or (hs is not None and (hs.current_term, hs.voted_for) != self._term_vote)
        if hs is not None:
            self._term_vote = (hs.current_term, hs.voted_for)
        return promises

    def sync(self) -> None:
        while self.unsynced:
            self.sync_next()

    def request(self, seq: int) -> None:
        """A background sync is asked for; the simulation decides when it completes."""

    def sync_next(self) -> int:
        """The oldest unsynced write becomes durable. Returns the number of the newest
        write now durable (writes with nothing to store count as durable at once)."""
        _, rd = self.unsynced.pop(0)
        if self.on_store is not None:
            self.on_store(rd)
        self.persist(rd)
        return self.unsynced[0][0] - 1 if self.unsynced else self.written

    def lose_unsynced(self) -> None:
        """The process died: what was not synced is gone, and write numbers restart."""
        self.unsynced = []
        self.written = 0
        self._term_vote = (self.hard_state.current_term, self.hard_state.voted_for)

    # --- durable state --------------------------------------------------------------

    def persist(self, rd: Ready) -> None:
        """Store a Ready's hard state and entries as durable at once."""
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries:
            # The entries replace everything from the first on, past the snapshot too:
            # a background write may land after a local snapshot already covers them
            # (as the WAL's replay does, raftproc.runtime.wal).
            base = self.snapshot_index
            del self.entries[max(rd.entries[0].index - base - 1, 0) :]
            self.entries.extend(e for e in rd.entries if e.index > base)

    def install_snapshot(self, meta: SnapshotMeta, data: tuple[Entry, ...]) -> None:
        """A snapshot received from a leader: it replaces every stored entry."""
        assert len(data) == meta.index
        self.snapshot, self.snapshot_data = meta, data
        self.entries = []

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
            if e.membership is not None:
                return e.membership
        return self.snapshot.membership if self.snapshot else bootstrap

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        term = self.term_at(self.last_index)
        assert term is not None, "the last index is always held (in the log or the snapshot)"
        return term
