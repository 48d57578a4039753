"""The write-ahead log: where a node's term, vote and entries survive a crash.

On-disk format
--------------
A data directory holds segment files `wal-00000001.log`, `wal-00000002.log`, ...
Each segment is a sequence of records:

    +----------------+----------------+---------------------------+
    | length (4, BE) | crc32 (4, BE)  | body (length bytes, CBOR) |
    +----------------+----------------+---------------------------+

`crc32` covers the 4 length bytes and the body, so a torn or flipped length is caught
too. The body is one CBOR map per Ready: {"hs": [term, vote, commit] or null,
"e": [entry, ...]} (raftproc.runtime.entries). Replaying applies records in order: `hs`
replaces the hard state; `e` replaces every entry from e[0].index on (the Ready
contract, raftproc.core.ready). One Ready is one record, written with one write()
and made durable with one fdatasync() (group commit): the hard state and entries it
carries become durable together or not at all. A record that changes only the
commit index is written but not synced: the commit index is a restart hint that is
never ahead of what a majority stores, so losing it loses nothing.

A segment is closed once it passes `segment_bytes`; the next record starts a new one.
Every segment begins with a record of the current hard state, fsynced with the file
and the directory when the segment is created, so deleting older segments never
loses the term or vote.

Snapshots and compaction
------------------------
Recovery starts from a snapshot (raftproc.runtime.snapshot) at index `base`:
entries up to it are skipped, and a record whose first entry lies at or below it
still truncates what follows it (its entries replaced everything from there on).
Segments numbered below the snapshot's `floor` contribute their hard state only:
they hold the log a follower dropped when it installed a leader's snapshot.
`remove_covered(index, floor)` deletes, oldest first, segments that are below the
floor or whose entries all lie at or below a durable snapshot's index; the
segment being written is never deleted.

What a crash leaves behind
--------------------------
- Before write(): nothing of the Ready is on disk. Nothing was sent, so nothing of it
  was promised.
- During write() or before fdatasync() returns: the last segment may end in a partial
  record, or in zeros where the file grew. That record was never acknowledged (the
  host sends only after fdatasync returns). Recovery cuts it off and logs
  `wal_torn_tail_truncated` with the segment and offset.
- After fdatasync(): the record is durable; recovery replays it.
- While creating a segment: an empty or partial new segment is the torn tail above;
  the directory fsync makes a created segment's name durable before it is used.

Power-loss mode (tests only)
----------------------------
With RAFTPROC_WAL_POWER_LOSS=1 in the environment, written bytes stay in this
process until the next sync writes them out and fdatasyncs them, so SIGKILL loses
exactly what a power cut would: everything written but not yet synced. It is off
unless that variable is set; chaos tests set it to make `kill` a power cut.

Anything else that fails its checksum (a complete record in the middle of a segment,
or in any segment but the last) is corruption, not a torn write: recovery stops
with WalCorruption naming the file and offset. It never silently drops entries
that may have been acknowledged.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from raftproc.core.messages import Entry
from raftproc.core.ready import HardState, Ready
from raftproc.runtime.entries import decode_entry, pieces_with_entries
from raftproc.runtime.histogram import Histogram

HEADER = struct.Struct(">II")
POWER_LOSS_ENV = "RAFTPROC_WAL_POWER_LOSS"
# Test-only: the path of a file; while it exists, every fsync first waits the number
# of milliseconds it holds (a disk that stalls, switched on and off by the test).
SLOW_SYNC_ENV = "RAFTPROC_WAL_SLOW_SYNC_FILE"
SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD = 1 << 30

Warn = Callable[..., None]
# Crash tests set this to kill the process at a step: ("wal_written", the Ready) once
# a record is written, ("wal_syncing", None) as an fdatasync starts (it covers every
# record written before), ("wal_synced", None) once it returned. A variable
# rather than methods they replace: a compiled class's methods cannot be replaced.
failpoint_hook: Callable[[str, Ready | None], None] | None = None


class WalCorruption(Exception):
    """A record that was once complete fails its checksum: the node must not start."""


@dataclass
class Recovered:
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)  # after `base`
    base: int = 0
    records: int = 0
    segments: int = 0
    torn_tail_bytes: int = 0


def _segment_name(number: int) -> str:
    return f"wal-{number:08d}.log"


def _segment_number(path: Path) -> int:
    return int(path.name[4:12])


def frame_record(body: bytes) -> bytes:
    return frame_pieces((body,))


def frame_pieces(pieces: Sequence[bytes]) -> bytes:
    """A record whose body is these pieces, joined: each byte of the body is copied
    once (a 16 KiB value was copied twice by concatenation)."""
    length = struct.pack(">I", sum(len(piece) for piece in pieces))
    crc = zlib.crc32(length)
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    return b"".join((length, struct.pack(">I", crc), *pieces))


_ENTRIES_KEY = cbor2.dumps("e")


def encode_record(rd: Ready) -> bytes:
    """{"hs": hard state or None, "e": entries}. A leader's entries were encoded for
    its followers already (raftproc.runtime.entries keeps the bytes)."""
    hs = rd.hard_state
    head = cbor2.dumps({"hs": None if hs is None else [hs.current_term, hs.voted_for, hs.commit_index]})
    return frame_pieces(pieces_with_entries(head, _ENTRIES_KEY, rd.entries))


class WriteAheadLog:
    """Open with `WriteAheadLog.open(dir)`, which recovers; then `append(ready)`."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES, sync: bool = True, power_loss: bool | None = None) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.sync_enabled = sync
        self._io_lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self.power_loss = os.environ.get(POWER_LOSS_ENV) == "1" if power_loss is None else power_loss
        self.slow_sync_file = os.environ.get(SLOW_SYNC_ENV)
        self._slowest_sync = 0.0  # the longest sync since slowest_sync() was last asked
        self.sync_latency = Histogram()  # every fdatasync, for the metrics
        self._sync_started: float | None = None  # time.monotonic() of the sync under way
        self._unsynced = bytearray()  # power-loss mode: written, not yet on disk
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self._hard_state = HardState()  # the newest written, to open each new segment with
        # segment number -> highest entry index written to it (0: none)
        self.segment_last_index: dict[int, int] = {}
        # A record that only moves commit_index promises nothing (the commit index is
        # a hint, never ahead of a majority's logs), so it rides on the next sync.
        self._written_term_vote: tuple[int, int | None] = (0, None)

    @classmethod
    def open(
        cls, directory: str | os.PathLike, *, warn: Warn | None = None, base: int = 0, floor: int = 0, **kw
    ) -> tuple[WriteAheadLog, Recovered]:
        """Recover from the segments in `directory`, on top of a snapshot at `base`
        whose entries count from segment `floor` on (0, 0: no snapshot)."""
        wal = cls(Path(directory), **kw)
        wal.dir.mkdir(parents=True, exist_ok=True)
        recovered = wal._recover(warn or (lambda event, **f: None), base, floor)
        return wal, recovered

    # --- writing ----------------------------------------------------------------

    def append(self, rd: Ready) -> None:
        """Make a Ready's hard state and entries durable. Returns after fdatasync."""
        if self.write(rd):
            self.sync()

    def write(self, rd: Ready) -> bool:
        """Write a Ready's record without waiting for the disk. Returns whether it
        promises something (entries, a new term or vote) and so needs a sync before
        the messages that depend on it leave."""
        if rd.hard_state is None and not rd.entries:
            return False
        record = encode_record(rd)
        if self._fd is None or self._size >= self.segment_bytes:
            self.cut()
        assert self._fd is not None
        self._write(record)
        hook = failpoint_hook
        if hook is not None:
            hook("wal_written", rd)
        hs = rd.hard_state
        promises = bool(rd.entries) or (hs is not None and (hs.current_term, hs.voted_for) != self._written_term_vote)
        if hs is not None:
            self._written_term_vote = (hs.current_term, hs.voted_for)
            self._hard_state = hs
        if rd.entries:
            last = rd.entries[-1].index
            if last > self.segment_last_index.get(self._segment, 0):
                self.segment_last_index[self._segment] = last
        return promises

    def cut(self) -> int:
        """Sync what was written, then start a new segment (opened by the current
        hard state, durable before this returns). Returns its number."""
        with self._io_lock:  # a background sync must not see the fd change under it
            self._sync_locked()
            self._start_segment(self._segment + 1)
        return self._segment

    def remove_covered(self, index: int, floor: int = 0) -> list[str]:
        """Delete the oldest segments a durable snapshot at `index` (whose entries
        count from segment `floor`) makes useless. Never the segment in use."""
        removed = []
        for path in self.segments():
            number = _segment_number(path)
            if number >= self._segment:
                break
            if number >= floor and self.segment_last_index.get(number, 0) > index:
                break
            path.unlink()
            self.segment_last_index.pop(number, None)
            removed.append(path.name)
        if removed and self.sync_enabled:
            fsync_dir(self.dir)
        return removed

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    def _write(self, record: bytes) -> None:
        if self.power_loss:
            with self._buffer_lock:
                self._unsynced += record
        else:
            assert self._fd is not None, "write() opens a segment first"
            self._write_whole(self._fd, record)
        self._size += len(record)

    def _write_whole(self, fd: int, record: bytes) -> None:
        """All of `record` or none of it: a write that fails part-way (ENOSPC) is cut
        off again, so the segment ends at a whole record and the same record can be
        written again once there is room."""
        try:
            write_all(fd, record)
        except OSError:
            os.ftruncate(fd, self._size)
            raise

    def sync(self) -> None:
        """Everything written so far reaches the disk before this returns. Safe to
        call from one background thread while the loop thread keeps writing."""
        with self._io_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._fd is None:
            return
        if self.power_loss:
            with self._buffer_lock:
                pending, self._unsynced = bytes(self._unsynced), bytearray()
            if pending:
                write_all(self._fd, pending)
        if self.sync_enabled:
            hook = failpoint_hook
            if hook is not None:
                hook("wal_syncing", None)
            self._sync_started = started = time.monotonic()
            try:
                if self.slow_sync_file:
                    self._stall_for_test()
                os.fdatasync(self._fd)
            except OSError as e:
                raise SyncFailed(f"fdatasync of {_segment_name(self._segment)} in {self.dir} failed: {e}") from e
            finally:
                self._sync_started = None
            took = time.monotonic() - started
            self._slowest_sync = max(self._slowest_sync, took)
            self.sync_latency.observe(took)
            if hook is not None:
                hook("wal_synced", None)

    def _stall_for_test(self) -> None:
        assert self.slow_sync_file is not None
        try:
            time.sleep(int(Path(self.slow_sync_file).read_text()) / 1000)
        except (OSError, ValueError):
            pass  # no file: the disk is fast again

    def slowest_sync(self) -> float:
        """Seconds: the longest sync since the last call, or the one still under way
        (on the background thread) if it has taken longer. Safe from any thread."""
        started = self._sync_started
        running = time.monotonic() - started if started is not None else 0.0
        slowest, self._slowest_sync = self._slowest_sync, 0.0
        return max(slowest, running)

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def _start_segment(self, number: int) -> None:
        """Called with _io_lock held and everything written so far synced."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self.dir / _segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(fd).st_size
        # Written straight to the file (even in power-loss mode) and synced now: older
        # segments may be deleted as soon as this one exists.
        opening = encode_record(Ready(hard_state=self._hard_state))
        try:
            write_all(fd, opening)
        except OSError:
            # No room for even the opening record (ENOSPC): no segment at all, rather
            # than an empty or torn one that recovery would have to explain.
            os.close(fd)
            if size == 0:
                path.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._segment = number
        self._size = size + len(opening)
        self.segment_last_index[number] = 0
        if self.sync_enabled:
            os.fsync(self._fd)
            fsync_dir(self.dir)

    # --- recovery ---------------------------------------------------------------

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("wal-*.log"))

    def _recover(self, warn: Warn, base: int, floor: int) -> Recovered:
        out = Recovered(base=base)
        segs = self.segments()
        for n, path in enumerate(segs):
            is_last = n == len(segs) - 1
            data = path.read_bytes()
            number = _segment_number(path)
            self.segment_last_index[number] = 0
            good_end = self._replay_segment(path, data, is_last, out, number >= floor)
            if good_end < len(data):
                out.torn_tail_bytes = len(data) - good_end
                warn("wal_torn_tail_truncated", segment=path.name, offset=good_end, dropped_bytes=len(data) - good_end)
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    f.flush()
                    os.fsync(f.fileno())
        out.segments = len(segs)
        self._written_term_vote = (out.hard_state.current_term, out.hard_state.voted_for)
        self._hard_state = out.hard_state
        if segs:
            self._segment = _segment_number(segs[-1])
            self._fd = os.open(segs[-1], os.O_WRONLY | os.O_APPEND)
            self._size = os.fstat(self._fd).st_size
        return out

    def _replay_segment(self, path: Path, data: bytes, is_last: bool, out: Recovered, with_entries: bool) -> int:
        """Apply every good record; return where the good records end."""
        pos = 0
        end = len(data)
        while pos < end:
            if end - pos < HEADER.size:
                return self._torn_or_corrupt(path, pos, is_last, "partial record header")
            length, crc = HEADER.unpack_from(data, pos)
            body_start = pos + HEADER.size
            if length == 0:
                # A file that grew but whose data never landed reads back as zeros.
                zero_tail = is_last and not any(data[pos:])
                return self._torn_or_corrupt(path, pos, zero_tail, "zero-length record")
            if length > MAX_RECORD:
                return self._torn_or_corrupt(path, pos, False, f"impossible record length {length}")
            if body_start + length > end:
                return self._torn_or_corrupt(path, pos, is_last, "record runs past the end of the file")
            body = data[body_start : body_start + length]
            if zlib.crc32(body, zlib.crc32(data[pos : pos + 4])) != crc:
                raise WalCorruption(f"{path}: checksum mismatch in the record at offset {pos}")
            last = self._apply(path, pos, body, out, with_entries)
            number = _segment_number(path)
            if last > self.segment_last_index.get(number, 0):
                self.segment_last_index[number] = last
            pos = body_start + length
        return pos

    @staticmethod
    def _torn_or_corrupt(path: Path, pos: int, torn_allowed: bool, what: str) -> int:
        if torn_allowed:
            return pos
        raise WalCorruption(f"{path}: {what} at offset {pos}")

    @staticmethod
    def _apply(path: Path, pos: int, body: bytes, out: Recovered, with_entries: bool) -> int:
        """Replay one record; return the highest entry index it carries (0: none)."""
        try:
            rec = cbor2.loads(body)
            hs = rec["hs"]
            if hs is not None:
                out.hard_state = HardState(hs[0], hs[1], hs[2])
            entries = [Entry(*item) if len(item) == 3 else decode_entry(item) for item in rec["e"]]
        except Exception as e:
            raise WalCorruption(f"{path}: undecodable record at offset {pos}: {e}") from None
        out.records += 1
        if not entries or not with_entries:
            return entries[-1].index if entries else 0
        base = out.base
        first = entries[0].index
        held_last = base + len(out.entries)
        if first > held_last + 1:
            what = "the snapshot it follows" if not out.entries else "a gap"
            raise WalCorruption(
                f"{path}: record at offset {pos} starts at entry {first}, after {what} (log held up to {held_last}); "
                "the entries between are missing"
            )
        # The record replaced everything from `first` on, including entries past
        # the snapshot even when `first` itself is inside it.
        del out.entries[max(first - base - 1, 0) :]
        out.entries.extend(e for e in entries if e.index > base)
        return entries[-1].index


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SyncFailed(Exception):
    """An fsync failed (EIO, or ENOSPC from a filesystem that allocates late). The
    kernel may have dropped the pages it could not write and marked them clean, so a
    retried fsync could succeed over lost data: nothing written since the last good
    sync can be promised. The node stops, loudly, and recovers from what is on disk."""


class BackgroundSync:
    """One thread that runs fdatasync for the event loop, so a pass keeps reading,
    proposing and batching while the disk works.

    The loop calls request(seq) after writing record `seq`; the thread syncs
    (covering every write made before it started) and calls done(seq) from its own
    thread, where seq is the highest request it covered. `done` must only wake the
    loop; the loop then releases what waited for that sync.
    """

    def __init__(self, wal: WriteAheadLog, done: Callable[[int], None]) -> None:
        self.wal = wal
        self.done = done
        self.synced = 0
        self.failed: SyncFailed | None = None  # set once, by the thread; the loop raises it
        self._requested = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._syncer_thread = threading.Thread(target=self._run, name="wal-sync", daemon=True)
        self._syncer_thread.start()

    def request(self, seq: int) -> None:
        with self._cond:
            if seq > self._requested:
                self._requested = seq
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._syncer_thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._requested <= self.synced and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                target = self._requested
            try:
                self.wal.sync()
            except SyncFailed as e:
                self.failed = e
                self.done(self.synced)  # wakes the loop, which finds `failed`
                return
            self.synced = target
            self.done(target)
