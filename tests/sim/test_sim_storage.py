"""The simulator's MemoryStorage keeps the contract the WAL keeps (raftproc.core.ready):
a Ready's entries replace everything from its first entry on, past a snapshot too."""

from __future__ import annotations

from raftproc.core.messages import Entry, Membership, SnapshotMeta
from raftproc.core.ready import HardState, Ready
from raftproc.runtime.wal import WriteAheadLog
from raftproc.sim.storage import MemoryStorage


def entries(first: int, last: int, term: int) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, b"c%d" % i) for i in range(first, last + 1))


def test_a_write_landing_after_a_local_snapshot_still_truncates_past_it(tmp_path):
    """The sequence a background write produces: entries 1..21 of term 34 stored; a
    new leader's 16..20 (term 41) replace 16 on; a snapshot at 20 is saved before that
    write lands. Entry 21 of term 34 must be gone, as it is from the WAL."""
    readies = [
        Ready(hard_state=HardState(34, 5, 0), entries=entries(1, 21, 34)),
        Ready(hard_state=HardState(41, None, 20), entries=entries(16, 20, 41)),
    ]
    snapshot_at_20 = SnapshotMeta(20, 41, Membership((1, 2, 3)))
    data = entries(1, 15, 34) + entries(16, 20, 41)

    mem = MemoryStorage()
    mem.persist(readies[0])
    mem.save_snapshot(snapshot_at_20, data)
    mem.persist(readies[1])
    assert mem.entries == [] and mem.last_index == 20 and mem.term_at(20) == 41

    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=10**9)
    for rd in readies:
        wal.append(rd)
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path, base=20)
    assert rec.entries == mem.entries
