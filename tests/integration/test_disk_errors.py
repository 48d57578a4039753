"""Disk errors: a WAL write that finds the disk full leaves no part of its record
behind, so the same write succeeds later and recovery sees whole records; a new
segment that cannot be started leaves no file; a failed fsync is SyncFailed (fatal),
from the loop or from the background sync thread; and the Ready driver stalls a
Ready whose write found the disk full, touching nothing, until retry() gets it
through."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from raftproc.core import Entry, HardState, Ready
from raftproc.runtime import wal as wal_module
from raftproc.runtime.wal import BackgroundSync, SyncFailed, WriteAheadLog
from raftproc.server.driver import Driver


def _entries(first: int, count: int, size: int = 100) -> list[Entry]:
    return [Entry(1, i, b"x" * size) for i in range(first, first + count)]


class FullAfter:
    """os.write that takes `room` more bytes, then raises ENOSPC (part-way if need be)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.write

    def __call__(self, fd: int, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real(fd, bytes(data[: self.room]))
        self.room -= n
        return n


def test_a_write_that_finds_the_disk_full_leaves_nothing_and_succeeds_later(tmp_path, monkeypatch):
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append(Ready(hard_state=HardState(1, 1, 0), entries=tuple(_entries(1, 3))))
    size = os.path.getsize(wal.segments()[-1])
    full = FullAfter(150)  # part of the next record fits, not all of it
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as e:
        wal.write(Ready(entries=tuple(_entries(4, 5))))
    assert e.value.errno == errno.ENOSPC
    assert os.path.getsize(wal.segments()[-1]) == size, "the torn record was cut off again"
    full.room = 10**9
    wal.append(Ready(entries=tuple(_entries(4, 5))))
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path)
    assert [e.index for e in rec.entries] == list(range(1, 9)) and rec.torn_tail_bytes == 0


def test_a_segment_that_cannot_start_leaves_no_file(tmp_path, monkeypatch):
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=1000)
    wal.append(Ready(hard_state=HardState(1, 1, 0), entries=tuple(_entries(1, 20))))  # past segment_bytes
    before = wal.segments()
    monkeypatch.setattr(os, "write", FullAfter(0))
    with pytest.raises(OSError):
        wal.write(Ready(entries=tuple(_entries(21, 1))))
    assert wal.segments() == before
    monkeypatch.undo()
    wal.append(Ready(entries=tuple(_entries(21, 1))))
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path)
    assert rec.entries[-1].index == 21 and len(WriteAheadLog.open(tmp_path)[0].segments()) == len(before) + 1


def test_a_failed_fsync_is_fatal_inline_and_from_the_sync_thread(tmp_path, monkeypatch):
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.write(Ready(hard_state=HardState(1, 1, 0), entries=tuple(_entries(1, 1))))

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wal_module.os, "fdatasync", eio)
    with pytest.raises(SyncFailed, match="fdatasync"):
        wal.sync()
    woke = threading.Event()
    syncer = BackgroundSync(wal, lambda seq: woke.set())
    syncer.request(1)
    assert woke.wait(10) and isinstance(syncer.failed, SyncFailed) and syncer.synced == 0
    syncer.stop()


class Stub:
    """The driver's other collaborators, recording what reached them."""

    def __init__(self) -> None:
        self.sent, self.applied = [], []

    def send(self, messages) -> None:
        self.sent += list(messages)

    def flush(self) -> None:
        pass

    def apply(self, entries) -> None:
        self.applied += list(entries)

    def serve_reads(self, read_states) -> None:
        pass

    def install(self, meta) -> None:
        raise AssertionError("no snapshot here")


class FullStorage:
    def __init__(self) -> None:
        self.full = True
        self.writes = []

    def write(self, rd: Ready) -> bool:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.writes.append(rd)
        return bool(rd.entries)

    def sync(self) -> None:
        pass


def test_the_driver_stalls_a_ready_on_a_full_disk_and_finishes_it_on_retry():
    import random

    from raftproc.core.node import RaftNode

    raft = RaftNode(1, (1,), rng=random.Random(1))
    storage, stub = FullStorage(), Stub()
    driver = Driver(raft, storage=storage, transport=stub, state_machine=stub, installer=stub)
    while raft.role != "leader":
        raft.tick()
        driver.handle_ready()
        if driver.stalled:
            break
    assert driver.stalled is not None and "ENOSPC" in driver.disk_full_error
    with pytest.raises(RuntimeError):
        raft.tick()  # mid-Ready: the host must hold everything back
    assert not driver.retry(), "still full"
    storage.full = False
    assert driver.retry() and driver.stalled is None
    driver.handle_ready()
    for _ in range(50):
        raft.tick()
        driver.handle_ready()
    assert raft.role == "leader" and storage.writes
