"""Snapshots: when to take one, writing it, compaction, installing a received one,
and streaming them between nodes.

Taking: once `snapshot_entries` entries were applied since the last snapshot and
their commands add up to half the last snapshot's size (or to `snapshot_bytes`,
whatever the state's size), the store is copied and written out on a thread
(raftproc.runtime.snapshot) while the loop goes on. When the file is durable the
core compacts its log, and WAL segments the previous snapshot covers are deleted
(one older snapshot and the log behind it stay, so a corrupt newest snapshot can
be survived).

Sending: a leader streams its newest snapshot to a follower that needs compacted
entries (raftproc.runtime.transfer), one stream per follower; finished, failed
and stalled streams are reported to the core between Readys (`settle`).

Receiving: chunks are written to a file; the whole file is decoded on a thread
(the loop keeps answering heartbeats), then stepped into the core as an
InstallSnapshot. The core's Ready then asks the driver to install it (`install`):
cut a new WAL segment, rename the file into place naming that segment as its
floor, restore the store, delete what the snapshot replaces.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path

from raftproc.core.log import RaftLog
from raftproc.core.messages import InstallSnapshot, SnapshotMeta
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER
from raftproc.kv.state_machine import KeyValueStore, KvImage
from raftproc.runtime import snapshot
from raftproc.runtime.histogram import Histogram
from raftproc.runtime.loop import EventLoop
from raftproc.runtime.snapshot import SnapshotFile
from raftproc.runtime.transfer import (
    Received,
    SnapshotAck,
    SnapshotChunk,
    SnapshotReceiver,
    SnapshotSender,
)
from raftproc.runtime.wal import WriteAheadLog, fsync_dir
from raftproc.server.disk import DiskFreeze
from raftproc.server.peers import Peers

Log = Callable[..., None]
SNAPSHOT_STALL_TIMEOUT = 10.0  # seconds without an acknowledged chunk before a transfer is given up
SNAPSHOT_WINDOW_CHUNKS = 8  # chunks in flight per transfer
KEEP_BYTES = 16 * 1024 * 1024  # commands kept in memory behind a new snapshot, at most


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    entries: int  # applied entries since the last snapshot before the next one is due...
    bytes: int  # ...or this many bytes of commands, whatever the state's size
    chunk_bytes: int  # of a transfer


class Snapshots:
    def __init__(
        self,
        *,
        me: int,
        data_dir: Path,
        wal: WriteAheadLog,
        newest: SnapshotFile | None,
        floor: int,
        raft: RaftNode,
        kv: KeyValueStore,
        peers: Peers,
        loop: EventLoop,
        policy: SnapshotPolicy,
        disk: DiskFreeze,
        clock: Callable[[], float],
        log: Log,
    ) -> None:
        self.me = me
        self.data_dir = data_dir
        self.wal = wal
        self.newest = newest  # the newest durable snapshot
        self.floor = floor  # the WAL segment an installed snapshot starts the log at
        self.raft = raft
        self.kv = kv
        self.peers = peers
        self.loop = loop
        self.policy = policy
        self.disk = disk
        self.clock = clock
        self.log = log
        self.bytes_since = 0  # command bytes applied since the newest snapshot
        self.save_latency = Histogram()  # snapshot writes, failed ones too, for the metrics
        # Taking one: the writer thread and what it produced.
        self._job: threading.Thread | None = None
        self._result: SnapshotFile | BaseException | None = None
        self._started = 0.0
        self._copy_ms = 0.0  # how long the loop stood still copying the store
        self._written = loop.make_waker(self._on_written)
        # What the writer thread calls (a test holds it back; a compiled module's
        # functions cannot be patched from outside).
        self.write_file: Callable[..., SnapshotFile] = snapshot.write_snapshot
        # Sending: one stream per follower; followers the core asked for while unreachable.
        self.senders: dict[int, SnapshotSender] = {}
        self._unreachable: set[int] = set()
        # Receiving: the file, the thread decoding it, and the decoded image that waits
        # for the core's Ready.
        self.receiver = SnapshotReceiver(data_dir, me, sync=wal.sync_enabled)
        self.incoming: Received | None = None
        self._incoming_image: KvImage | None = None
        self._loader: threading.Thread | None = None
        self._loaded: tuple[Received, SnapshotAck, KvImage | BaseException] | None = None
        self._on_loaded_wake = loop.make_waker(self._on_loaded)

    def close(self) -> None:
        for sender in self.senders.values():
            sender.finish(False)
        self.receiver.abort()
        if self._job is not None:
            self._job.join()
        if self._loader is not None:
            self._loader.join()

    @property
    def index(self) -> int:
        return self.newest.index if self.newest else 0

    # --- taking one -----------------------------------------------------------------

    def applied(self, command: bytes | None) -> None:
        if command is not None:
            self.bytes_since += len(command)

    def maybe_take(self) -> None:
        if self._job is not None:
            return
        index = self.kv.last_applied
        since = index - self.index
        if since <= 0 or not self._due(since):
            return
        if index > self.raft.log.stable_index:
            # Background sync: the WAL write that put this entry in the log (and cut any
            # stale tail after it) is not durable yet; a snapshot past it would come
            # back after a power cut followed by that tail. A later pass takes it.
            return
        term = self.raft.log.term_at(index)
        assert term is not None, "Invariant: applied entries past the snapshot are in the log"
        membership = self.raft.log.membership_at(index)
        meta = SnapshotMeta(index, term, membership, self.peers.address_book(membership.members), self.raft.log.hash_at(index))
        self._started = self.clock()
        image = self.kv.image()  # a copy: the store goes on applying while the thread writes
        self._copy_ms = round((self.clock() - self._started) * 1000, 1)
        self.bytes_since = 0
        floor, sync = self.floor, self.wal.sync_enabled

        def write() -> None:
            try:
                self._result = self.write_file(self.data_dir, meta, image, floor=floor, sync=sync)
            except BaseException as e:  # reported on the loop thread
                self._result = e
            self._written()

        self._job = threading.Thread(target=write, name="snapshot", daemon=True)
        self._job.start()

    def _due(self, entries_since: int) -> bool:
        """Enough entries, and a log at least half as large as the last snapshot, so
        that rewriting a large state stays a fraction of the cost of logging (a
        million keys are not rewritten every 10,000 writes); or a log past
        snapshot_bytes, whatever the state's size."""
        if self.bytes_since >= self.policy.bytes:
            return True
        last_size = self.newest.size if self.newest else 0
        return entries_since >= self.policy.entries and self.bytes_since >= last_size // 2

    def _on_written(self) -> None:
        """On the loop thread: the snapshot is durable (or failed). Compact the core's
        log and delete what the previous snapshot makes useless. While the disk is
        full the core is mid-Ready and must not be compacted: `settle` finishes this
        after the thaw."""
        job, result = self._job, self._result
        if job is None or result is None or self.disk.frozen:
            return
        job.join()
        self._job, self._result = None, None
        ms = round((self.clock() - self._started) * 1000, 1)
        self.save_latency.observe(ms / 1000)
        if isinstance(result, BaseException):
            self.log("snapshot_failed", level="error", error=f"{type(result).__name__}: {result}", ms=ms)
            return
        previous = self.newest
        if previous is not None and result.index <= previous.index:
            result.path.unlink(missing_ok=True)  # an installed snapshot overtook it
            return
        self.newest = result
        self.raft.compact(compaction_index(self.raft.log, result.index, self.policy.entries // 2, KEEP_BYTES))
        # One older snapshot and the log behind it stay, so a newest snapshot found
        # corrupt on restart can be survived.
        removed = self.wal.remove_covered(previous.index if previous else 0, self.floor)
        keep_files = [result.path] + ([previous.path] if previous else [])
        old = snapshot.remove_older(self.data_dir, keep_files)
        snapshot.failpoint("wal_compacted")
        self.log(
            "snapshot_saved",
            index=result.index,
            snapshot_term=result.term,
            bytes=result.size,
            keys=len(self.kv.data),
            ms=ms,
            copy_ms=self._copy_ms,
            log_entries=len(self.raft.log),
            wal_segments_removed=len(removed),
            snapshots_removed=len(old),
        )

    # --- installing a received one (the driver's SnapshotInstaller) ------------------

    def install(self, meta: SnapshotMeta) -> None:
        inc = self.incoming
        if inc is None or (inc.meta.index, inc.meta.term) != (meta.index, meta.term):
            raise RuntimeError(f"the core installs snapshot {meta.term}/{meta.index}, which this host never received")
        started = self.clock()
        # A new segment as the floor: entries written before it belong to the log
        # the install drops, and must not come back on a restart. On a full disk
        # this raises and the driver retries the install later, from here.
        floor = self.wal.cut()
        self.incoming = None
        final = self.data_dir / snapshot.snapshot_name(meta.index, meta.term, floor)
        os.rename(inc.path, final)
        if self.wal.sync_enabled:
            fsync_dir(self.data_dir)
        snapshot.failpoint("snapshot_install_renamed")
        image, self._incoming_image = self._incoming_image, None
        assert image is not None
        self.kv.restore(meta.index, image)
        self.peers.learn(meta.addresses)
        self.floor = floor
        self.newest = SnapshotFile(final, meta.index, meta.term, floor, final.stat().st_size)
        self.bytes_since = 0
        removed = self.wal.remove_covered(meta.index, floor)
        old = snapshot.remove_older(self.data_dir, [final])
        self.log(
            "snapshot_installed",
            index=meta.index,
            snapshot_term=meta.term,
            leader=inc.leader,
            bytes=self.newest.size,
            keys=len(self.kv.data),
            wal_segments_removed=len(removed),
            snapshots_removed=len(old),
            ms=round((self.clock() - started) * 1000, 1),
        )

    def drop_unwanted(self) -> None:
        """After a Ready: a received snapshot the core did not install (its log
        already held the snapshot's end) is deleted."""
        if self.incoming is not None:
            self.incoming.path.unlink(missing_ok=True)
            self.incoming, self._incoming_image = None, None

    # --- sending --------------------------------------------------------------------

    def send(self, msg: InstallSnapshot) -> None:
        """The core's InstallSnapshot: stream the newest snapshot to the follower."""
        peer = msg.dst
        if peer in self.senders:
            return  # one stream per follower; the core waits in its SNAPSHOT state
        snap = self.newest
        if snap is None or snap.index < msg.snapshot.index:
            raise RuntimeError(f"the core asks to send snapshot {msg.snapshot.index}, the newest on disk is {snap}")
        link = self.peers.link(peer)
        if link is None or not link.connected:
            # Nothing to stream to; the core retries from a later heartbeat.
            self._unreachable.add(peer)
            return
        self.senders[peer] = sender = SnapshotSender(
            me=self.me,
            peer=peer,
            term=msg.term,
            snap=snap,
            chunk_bytes=self.policy.chunk_bytes,
            window=SNAPSHOT_WINDOW_CHUNKS * self.policy.chunk_bytes,
            send=self.peers.send,
            now=self.clock(),
        )
        self.log("snapshot_send_started", peer=peer, index=snap.index, snapshot_term=snap.term, bytes=sender.total)
        sender.pump()

    def link_down(self, peer: int) -> None:
        sender = self.senders.get(peer)
        if sender is not None:
            sender.finish(False)  # chunks queued on the dead connection are gone

    def on_ack(self, ack: SnapshotAck) -> None:
        sender = self.senders.get(ack.src)
        if sender is not None:
            sender.on_ack(ack, self.clock())

    def settle(self) -> None:
        """Outside a Ready: finish a snapshot written or loaded while the disk was
        full, and report finished, failed and stalled transfers to the core."""
        self._on_written()
        self._on_loaded()
        if not (self.senders or self._unreachable):
            return
        for peer in self._unreachable:
            self.raft.report_snapshot(peer, success=False)
        self._unreachable.clear()
        now = self.clock()
        for peer, sender in list(self.senders.items()):
            if sender.outcome is None and (self.raft.role != LEADER or self.raft.current_term != sender.term):
                sender.finish(False)
            elif sender.stalled(now, SNAPSHOT_STALL_TIMEOUT):
                self.log("snapshot_send_stalled", level="warning", peer=peer, acked=sender.acked, total=sender.total)
                sender.finish(False)
            if sender.outcome is None:
                continue
            del self.senders[peer]
            self.log(
                "snapshot_send_finished",
                level="info" if sender.outcome else "warning",
                peer=peer,
                index=sender.snap.index,
                success=sender.outcome,
                bytes=sender.acked,
                ms=round((now - sender.started) * 1000, 1),
            )
            self.raft.report_snapshot(peer, success=sender.outcome)

    # --- receiving ------------------------------------------------------------------

    def on_chunk(self, chunk: SnapshotChunk) -> None:
        ack, done, refused = self.receiver.on_chunk(chunk, self.raft.current_term)
        if refused is not None:
            self.log("snapshot_chunk_refused", level="warning", leader=chunk.src, offset=chunk.offset, reason=refused)
        elif chunk.offset == 0:
            self.log("snapshot_receive_started", leader=chunk.src, index=chunk.index, bytes=chunk.total)
        if done is None:
            self.peers.send(ack)
            return
        self.log("snapshot_received", leader=done.leader, index=done.meta.index, snapshot_term=done.meta.term)
        if self._loader is not None:  # still loading another one: let the leader retry later
            done.path.unlink(missing_ok=True)
            self.peers.send(dataclasses.replace(ack, ok=False, next_offset=0))
            return
        # Decoding a large snapshot takes a second or more: a thread does it while the
        # loop keeps answering heartbeats (else a leader that needs this follower for
        # its quorum steps down). The last chunk's ack waits for it, so the leader
        # does not probe past a snapshot the core has not been given yet.

        def load() -> None:
            try:
                result: KvImage | BaseException = snapshot.read_snapshot(done.path)[1]
            except BaseException as e:  # reported on the loop thread
                result = e
            self._loaded = (done, ack, result)
            self._on_loaded_wake()

        self._loader = threading.Thread(target=load, name="snapshot-load", daemon=True)
        self._loader.start()

    def _on_loaded(self) -> None:
        """On the loop thread: a received snapshot is decoded. It is stepped into the
        core, which must not happen mid-Ready: while the disk is full `settle`
        does it after the thaw."""
        loader, loaded = self._loader, self._loaded
        if loader is None or loaded is None or self.disk.frozen:
            return
        loader.join()
        self._loader, self._loaded = None, None
        done, ack, result = loaded
        if isinstance(result, BaseException):
            self.log("snapshot_load_failed", level="error", index=done.meta.index, error=f"{type(result).__name__}: {result}")
            done.path.unlink(missing_ok=True)
            self.peers.send(dataclasses.replace(ack, ok=False, next_offset=0))
            return
        if self.incoming is not None:
            self.incoming.path.unlink(missing_ok=True)
        self.incoming, self._incoming_image = done, result
        self.raft.step(InstallSnapshot(src=done.leader, dst=self.me, term=done.term, snapshot=done.meta))
        self.peers.send(ack)

    def status(self) -> dict:
        return {
            "snapshot_index": self.index,
            "snapshot_bytes": self.newest.size if self.newest else 0,
            "snapshots_sending": {p: [s.acked, s.total] for p, s in self.senders.items()},
        }


def compaction_index(log: RaftLog, snapshot_index: int, keep_entries: int, keep_bytes: int) -> int:
    """Where to compact the log behind a new snapshot at `snapshot_index`: the entries
    just before it stay for a follower a little behind (it can still get them by
    append), at most `keep_entries` of them and at most `keep_bytes` of commands, so
    large values never keep thousands of entries' worth of memory."""
    floor = max(snapshot_index - keep_entries, log.snapshot_index)
    index, kept = snapshot_index, 0
    while index > floor:
        size = len(log.entry(index).command or b"")
        if kept + size > keep_bytes:
            break
        kept += size
        index -= 1
    return index
