"""InstallSnapshot on the wire: a leader streams a snapshot file to one follower in
chunks of bounded size, read from the file as they go (never the whole snapshot in
memory), and the follower writes them to a temporary file.

Protocol
--------
The leader sends SnapshotChunk(offset, data, total) frames, at most `window` bytes
ahead of the follower's last SnapshotAck(next_offset). Every chunk names its
transfer: the leader's term and the snapshot's index and term.

The receiver keeps one transfer at a time:
- a chunk at offset 0 starts a transfer, dropping any partial one of another
  snapshot; for the same snapshot from the same leader in the same term (the
  leader retrying after a broken connection) it is acknowledged with the offset
  already received, and the sender resumes from there;
- a chunk at the offset it expects is written; one below it is a duplicate and only
  re-acknowledged; one above it (a gap: chunks lost with a broken connection) or
  for a transfer it does not know (it restarted mid-transfer) is refused with
  ok=False, and the sender gives up; the leader then starts a fresh transfer;
- a chunk from an older term than the node's is refused (a deposed leader);
- the last chunk completes the file: it is fsynced and verified (every checksum,
  the end record, the metadata the chunks named) before the host steps the core's
  InstallSnapshot. A file that fails is dropped and refused.

The sender gives up (the host reports failure to the core, which retries from a
heartbeat later) on a refusal, when its connection drops, or when no
acknowledgement moves for `stall_timeout` seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raftproc.core.messages import NodeId, SnapshotMeta
from raftproc.runtime.snapshot import INCOMING_PREFIX, TMP_SUFFIX, SnapshotCorrupt, SnapshotFile, read_meta


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotChunk:
    src: NodeId
    dst: NodeId
    term: int
    index: int
    snap_term: int
    offset: int
    total: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotAck:
    src: NodeId
    dst: NodeId
    term: int
    index: int
    snap_term: int
    next_offset: int
    ok: bool


class SnapshotSender:
    """One snapshot on its way to one follower."""

    def __init__(
        self,
        *,
        me: NodeId,
        peer: NodeId,
        term: int,
        snap: SnapshotFile,
        chunk_bytes: int,
        window: int,
        send: Callable[[SnapshotChunk], bool],
        now: float,
    ) -> None:
        self.me, self.peer, self.term, self.snap = me, peer, term, snap
        self.chunk_bytes = chunk_bytes
        self.window = max(window, chunk_bytes)
        self._send = send
        # Held open: a newer local snapshot may unlink the file mid-stream.
        self._fd = os.open(snap.path, os.O_RDONLY)
        self.total = os.fstat(self._fd).st_size
        self.sent = 0
        self.acked = 0
        self.last_progress = now
        self.started = now
        self.outcome: bool | None = None  # None while running

    def pump(self) -> None:
        """Send chunks until the window is full or the file is all out."""
        while self.outcome is None and self.sent < self.total and self.sent - self.acked < self.window:
            data = os.pread(self._fd, self.chunk_bytes, self.sent)
            if not data:
                self.finish(False)
                return
            chunk = SnapshotChunk(
                src=self.me,
                dst=self.peer,
                term=self.term,
                index=self.snap.index,
                snap_term=self.snap.term,
                offset=self.sent,
                total=self.total,
                data=data,
            )
            if not self._send(chunk):
                self.finish(False)  # the link is down or its buffer full
                return
            self.sent += len(data)

    def on_ack(self, ack: SnapshotAck, now: float) -> None:
        if self.outcome is not None or (ack.index, ack.snap_term, ack.term) != (self.snap.index, self.snap.term, self.term):
            return
        if not ack.ok:
            self.finish(False)
            return
        if ack.next_offset > self.acked:
            self.acked = min(ack.next_offset, self.total)
            self.last_progress = now
        if self.acked > self.sent:
            self.sent = self.acked  # the follower kept a partial copy: resume there
        if self.acked >= self.total:
            self.finish(True)
            return
        self.pump()

    def stalled(self, now: float, timeout: float) -> bool:
        return self.outcome is None and now - self.last_progress > timeout

    def finish(self, success: bool) -> None:
        if self.outcome is None:
            self.outcome = success
            os.close(self._fd)


@dataclass(slots=True)
class _Incoming:
    leader: NodeId
    term: int
    index: int
    snap_term: int
    total: int
    path: Path
    fd: int
    received: int = 0


@dataclass(frozen=True, slots=True)
class Received:
    """A complete, verified snapshot from `leader` in `term`, ready to step in."""

    leader: NodeId
    term: int
    meta: SnapshotMeta
    path: Path


class SnapshotReceiver:
    """The follower's side: at most one partial snapshot at a time."""

    def __init__(self, directory: Path, me: NodeId, *, sync: bool = True) -> None:
        self.dir = directory
        self.me = me
        self.sync = sync
        self._cur: _Incoming | None = None

    def on_chunk(self, chunk: SnapshotChunk, current_term: int) -> tuple[SnapshotAck, Received | None, str | None]:
        """Take one chunk. Returns the answer for the leader, the finished snapshot
        when this chunk completed one, and why the chunk was refused (None if not)."""
        if chunk.term < current_term:
            return self._ack(chunk, 0, False), None, f"chunk from term {chunk.term}, node is in {current_term}"
        if chunk.offset + len(chunk.data) > chunk.total or not chunk.data:
            self.abort()
            return self._ack(chunk, 0, False), None, "chunk outside the snapshot's size"
        cur = self._cur
        same = cur is not None and (cur.leader, cur.term, cur.index, cur.snap_term, cur.total) == (
            chunk.src,
            chunk.term,
            chunk.index,
            chunk.snap_term,
            chunk.total,
        )
        if chunk.offset == 0 and not same:
            self._start(chunk)
        cur = self._cur
        if cur is None or (cur.leader, cur.term, cur.index, cur.snap_term, cur.total) != (
            chunk.src,
            chunk.term,
            chunk.index,
            chunk.snap_term,
            chunk.total,
        ):
            return self._ack(chunk, 0, False), None, "chunk of a transfer not in progress"
        if chunk.offset < cur.received:
            return self._ack(chunk, cur.received, True), None, None  # a duplicate
        if chunk.offset > cur.received:
            self.abort()
            return self._ack(chunk, 0, False), None, f"gap: expected offset {cur.received}, got {chunk.offset}"
        try:
            os.pwrite(cur.fd, chunk.data, chunk.offset)
        except OSError as e:
            self.abort()
            return self._ack(chunk, 0, False), None, f"cannot write the snapshot: {e}"
        cur.received += len(chunk.data)
        if cur.received < cur.total:
            return self._ack(chunk, cur.received, True), None, None
        return self._complete(chunk, cur)

    def _start(self, chunk: SnapshotChunk) -> None:
        self.abort()
        path = self.dir / f"{INCOMING_PREFIX}{chunk.index:020d}-{chunk.snap_term:020d}.snap{TMP_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._cur = _Incoming(chunk.src, chunk.term, chunk.index, chunk.snap_term, chunk.total, path, fd)

    def _complete(self, chunk: SnapshotChunk, cur: _Incoming) -> tuple[SnapshotAck, Received | None, str | None]:
        self._cur = None
        try:
            if self.sync:
                os.fsync(cur.fd)
            os.close(cur.fd)
            meta = read_meta(cur.path)
            if (meta.index, meta.term) != (cur.index, cur.snap_term):
                raise SnapshotCorrupt(f"file holds {meta.term}/{meta.index}, chunks named {cur.snap_term}/{cur.index}")
        except (OSError, SnapshotCorrupt) as e:
            cur.path.unlink(missing_ok=True)
            return self._ack(chunk, 0, False), None, f"received snapshot does not verify: {e}"
        return self._ack(chunk, cur.received, True), Received(cur.leader, cur.term, meta, cur.path), None

    def abort(self) -> None:
        cur, self._cur = self._cur, None
        if cur is not None:
            os.close(cur.fd)
            cur.path.unlink(missing_ok=True)

    @property
    def in_progress(self) -> tuple[int, int] | None:
        return None if self._cur is None else (self._cur.received, self._cur.total)

    def _ack(self, chunk: SnapshotChunk, next_offset: int, ok: bool) -> SnapshotAck:
        return SnapshotAck(
            src=self.me,
            dst=chunk.src,
            term=chunk.term,
            index=chunk.index,
            snap_term=chunk.snap_term,
            next_offset=next_offset,
            ok=ok,
        )
