"""NodeHost: one Raft node with its IO: peers, clients, the WAL and the key-value store.

Each pass of the event loop ends in `_handle_ready`, which carries out the core's
Ready as the contract demands (raftproc.core.ready). By default the fdatasync runs
inline; with `background_sync = true` it runs on a thread
(raftproc.runtime.wal.BackgroundSync) and the steps are:

1. a leader's AppendEntries leave at once (Raft thesis §10.2.1);
2. the Ready's WAL record is written (one record for everything the pass produced);
3. committed entries are applied and the clients waiting are answered;
4. the core advances with persisted=False;
5. the messages that promise the record (votes, acknowledgements) wait until the
   sync thread reports it durable; then they leave and the core hears persisted().
One fdatasync covers every record written before it started (group commit).

Snapshots: once `snapshot_entries` entries were applied since the last snapshot and
their commands add up to half the last snapshot's size (or to `snapshot_bytes`,
whatever the state's size), the store is copied and written out on a thread
(raftproc.runtime.snapshot) while the loop goes on. When the file is durable the
core compacts its log, and WAL segments the previous snapshot covers are deleted
(one older snapshot and the log behind it stay, so a corrupt newest snapshot can
be survived). A leader streams its snapshot to a follower that needs compacted
entries (raftproc.runtime.transfer); the follower installs it when the core's
Ready says so: cut a new WAL segment, rename the file into place naming that
segment as its floor, restore the store, delete what the snapshot replaces.

Membership: the first configuration is the config file's nodes not marked `join`;
after that the log says (raftproc.core.membership). Each configuration entry
carries the address book of its members, so every node learns how to reach a node
added with `client member add`; the host keeps one outbound link per member (and
per node it must answer), and closes links to nodes that left.

Client answers are honest about what is known:
- "ok": the command was applied (its result says how, e.g. a cas mismatch);
- "redirect" / "no_leader" / "failed" / "error": it certainly was not applied and
  will not be (it never reached a log, or another entry won its index);
- "unknown": it reached a leader's log and may still commit. The client retries
  with the same sequence number; the session table applies it at most once.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import os
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from raftproc.config import ClusterConfig, NodeAddress
from raftproc.core.messages import Entry, InstallSnapshot, SnapshotMeta
from raftproc.core.node import LEADER, NotLeader, RaftNode, TransferInProgress
from raftproc.core.ready import split_messages
from raftproc.kv.commands import Command
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime import codec, snapshot
from raftproc.runtime.codec import RemoteProtocolError, decode_client_request, decode_message, encode_message
from raftproc.runtime.entries import decode_addresses, encode_addresses
from raftproc.runtime.logging import core_logger
from raftproc.runtime.loop import Backoff, Connection, EventLoop, Listener
from raftproc.runtime.members import MemberChange, describe
from raftproc.runtime.snapshot import KvImage, SnapshotFile
from raftproc.runtime.identity import KnownPeers, PeerHello, PeerRefused, load_identity
from raftproc.runtime.storage import open_storage
from raftproc.runtime.transfer import Received, SnapshotAck, SnapshotChunk, SnapshotReceiver, SnapshotSender
from raftproc.runtime.wal import BackgroundSync, WriteAheadLog, fsync_dir

Log = Callable[..., None]
GC_FREEZE_INTERVAL = 5.0  # seconds
SNAPSHOT_STALL_TIMEOUT = 10.0  # seconds without an acknowledged chunk before a transfer is given up
SNAPSHOT_WINDOW_CHUNKS = 8  # chunks in flight per transfer
MEMBER_CHANGE_TIMEOUT = 60.0  # seconds a `member add` may take (the learner's catch-up included)


@dataclass(slots=True)
class Waiting:
    term: int
    conn: Connection
    request_id: int


class PeerLink:
    """The one outbound connection to a peer, redialled with backoff when it drops."""

    def __init__(self, host: NodeHost, peer_id: int, address: tuple[str, int]) -> None:
        self.host = host
        self.peer_id = peer_id
        self.address = address
        self.backoff = Backoff(host.rng)
        self.conn: Connection | None = None
        self.connected = False
        self.closed = False  # the peer left the cluster: no more redials
        self._generation = 0  # a redial scheduled under an older generation is void
        self._dial()

    def close(self) -> None:
        self.closed = True
        self._generation += 1
        if self.conn is not None:
            self.conn.close("peer left the cluster")

    def send(self, body: bytes) -> bool:
        """Queue a frame; False when it was dropped (no connection, or its buffer full)."""
        return self.conn is not None and self.conn.send(body)

    def _dial(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect(self.address)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # reported through SO_ERROR when the socket turns writable
        h = self.host
        self.conn = Connection(
            h.loop, sock, name=f"peer-out-{self.peer_id}", on_frame=self._on_frame, on_close=self._on_close,
            max_frame=h.cfg.max_frame, max_buffer=h.cfg.peer_buffer, log=h.log, connecting=True,
            on_connected=self._on_connected,
        )
        # Queued ahead of anything else, so it is the connection's first frame.
        self.conn.send(encode_message(PeerHello(h.id, self.peer_id, h.incarnation)))

    def _on_connected(self, conn: Connection) -> None:
        self.connected = True
        self.backoff.reset()
        self.host.log("peer_connected", peer=self.peer_id)

    def _on_frame(self, conn: Connection, body: bytes) -> None:
        try:
            msg = decode_message(body)
        except RemoteProtocolError:
            msg = None
        if isinstance(msg, PeerRefused) and msg.src == self.peer_id and msg.dst == self.host.id:
            self.host.on_refused(self.peer_id, msg.reason)
            conn.close("refused by the peer")
            return
        self.host.log("frame_error", level="warning", conn=conn.name, error="unexpected frame on an outbound link")
        conn.close("protocol error")

    def redial_now(self) -> None:
        """The peer just spoke to us, so it is up: stop waiting out the backoff. A
        restarted node then hears its leader before its election timer fires."""
        if self.conn is None and self.host.running and not self.closed:
            self._generation += 1
            self.backoff.reset()
            self._dial()

    def _on_close(self, conn: Connection, reason: str) -> None:
        self.conn = None
        if self.connected:
            self.connected = False
            self.host.log("peer_disconnected", level="warning", peer=self.peer_id, reason=reason)
            self.host.raft.report_unreachable(self.peer_id)
            sender = self.host.senders.get(self.peer_id)
            if sender is not None:
                sender.finish(False)  # chunks queued on the dead connection are gone
        if self.host.running and not self.closed:
            generation = self._generation
            self.host.loop.call_later(self.backoff.next_delay(), lambda: self._redial(generation))

    def _redial(self, generation: int) -> None:
        if generation == self._generation and self.conn is None and self.host.running and not self.closed:
            self._dial()


class NodeHost:
    def __init__(self, cfg: ClusterConfig, node_id: int, *, log: Log) -> None:
        self.cfg = cfg
        self.id = node_id
        self.log = log
        self.rng = random.Random()
        self.running = False
        self.loop = EventLoop()
        me = cfg.node(node_id)
        # Every node's addresses known so far: the file's, then those that
        # configuration entries and snapshots carry (newest wins).
        self.book: dict[int, NodeAddress] = dict(cfg.nodes)
        self.peers: dict[int, PeerLink] = {}  # before recovery: learning an address closes a stale link
        self._recover()
        self.waiting: dict[int, Waiting] = {}
        # Reads: asked of the core (token -> conn, request id, key), and confirmed
        # ones waiting for their index to be applied (a heap by index).
        self._read_token = 0
        self._reads_asked: dict[int, tuple[Connection, int, str]] = {}
        self._reads_confirmed: list[tuple[int, int, tuple[Connection, int, str]]] = []
        self.inbound: set[Connection] = set()
        self._greeted: dict[Connection, int] = {}  # inbound peer connection -> the node that said hello
        self._refused_logged: dict[int, str] = {}  # peer -> why we refused it (logged once)
        self._refused_by: dict[int, str] = {}  # peer -> why it refused us (logged once)
        self.peer_listener = Listener(self.loop, me.peer, self._accept_peer)
        self.client_listener = Listener(self.loop, me.client, self._accept_client)
        self.running = True
        self._linked_membership = None
        self._reconcile_links()
        self.member_change: MemberChange | None = None
        self._written = 0  # Ready records written so far
        self._held: deque[tuple[int, list, tuple[int, int] | None]] = deque()
        self.syncer: BackgroundSync | None = None
        if cfg.background_sync:
            wake = self.loop.make_waker(self._on_synced)
            self.syncer = BackgroundSync(self.wal, lambda seq: wake())
        self.loop.after_pass.append(self._handle_ready)
        self._tick_interval = cfg.tick_ms / 1000
        self._next_tick = time.monotonic() + self._tick_interval
        self._last_tick_at = time.monotonic()
        self.loop.call_at(self._next_tick, self._tick)
        self.loop.call_later(GC_FREEZE_INTERVAL, self._freeze_heap)
        self.senders: dict[int, SnapshotSender] = {}
        self._unreachable_snapshots: set[int] = set()
        self.receiver = SnapshotReceiver(self.data_dir, node_id, sync=self.wal.sync_enabled)
        self.incoming: Received | None = None  # received whole and loaded, waiting for the core's Ready
        self._incoming_image: KvImage | None = None
        self._loader: threading.Thread | None = None  # decodes a received snapshot off the loop
        self._loaded: tuple[Received, SnapshotAck, KvImage | BaseException] | None = None
        self._snapshot_loaded = self.loop.make_waker(self._on_snapshot_loaded)
        self._snapshot_job: threading.Thread | None = None
        self._snapshot_result: SnapshotFile | BaseException | None = None
        self._snapshot_started = 0.0
        self._snapshot_copy_ms = 0.0  # how long the loop stood still copying the store
        self._snapshot_done = self.loop.make_waker(self._on_snapshot_written)
        log("node_started", term=self.raft.current_term, role=self.raft.role, peer=f"{me.peer[0]}:{me.peer[1]}", client=f"{me.client[0]}:{me.client[1]}", pid=os.getpid())

    def _recover(self) -> None:
        """Newest valid snapshot, then the WAL after it, then the core on top."""
        cfg, log = self.cfg, self.log
        started = time.monotonic()
        self.data_dir = cfg.node_data_dir(self.id)
        st = open_storage(self.data_dir, warn=lambda event, **f: log(event, level="warning", **f), segment_bytes=cfg.segment_bytes)
        self.wal, rec, self.snapshot, self.floor = st.wal, st.log, st.snapshot, st.floor
        self.incarnation = load_identity(self.data_dir, self.id, sync=self.wal.sync_enabled)
        self.known_peers = KnownPeers(self.data_dir, sync=self.wal.sync_enabled)
        self.kv = KeyValueStore()
        meta = st.meta
        if meta is not None and st.image is not None:
            self.kv.restore(meta.index, st.image)
        self._bytes_since_snapshot = 0
        self.raft = RaftNode(
            self.id, cfg.bootstrap_voters(), rng=self.rng, config=cfg.raft(), hard_state=rec.hard_state,
            entries=rec.entries, snapshot=meta, applied=meta.index if meta else 0, log=core_logger(log),
        )
        if meta is not None:
            self._learn_addresses(meta.context)
        for entry in rec.entries:
            if entry.config is not None:
                self._learn_addresses(entry.command)
        log(
            "wal_recovered", term=rec.hard_state.current_term, role=self.raft.role, segments=rec.segments, records=rec.records, entries=len(rec.entries),
            voted_for=rec.hard_state.voted_for, commit_index=rec.hard_state.commit_index,
            snapshot_index=meta.index if meta else 0, keys=len(self.kv.data), wal_floor=self.floor,
            torn_tail_bytes=rec.torn_tail_bytes, ms=round((time.monotonic() - started) * 1000, 1),
        )

    # --- running ------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.loop.run()
        finally:
            self.close()

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        if not self.running:
            return
        self.running = False
        self._fail_waiting("unknown", "node shutting down")
        for conn in list(self.inbound):
            conn.close("node shutting down")
        for link in self.peers.values():
            if link.conn is not None:
                link.conn.close("node shutting down")
        self.peer_listener.close()
        self.client_listener.close()
        if self.syncer is not None:
            self.syncer.stop()
        for sender in self.senders.values():
            sender.finish(False)
        self.receiver.abort()
        if self._snapshot_job is not None:
            self._snapshot_job.join()
        if self._loader is not None:
            self._loader.join()
        self.wal.close()
        self.loop.close()
        self.log("node_stopped")

    def _freeze_heap(self) -> None:
        """Move every object alive now out of the cyclic GC's reach (gc.freeze).

        The log and the key-value store hold millions of long-lived objects; a full
        collection walks them all and, measured in a 60-second run at peak load,
        paused the leader long enough to lose an election. Frozen objects are never
        scanned again, so pauses stay proportional to what is new. The cost: a
        reference cycle among frozen objects is never collected (the loop creates
        none on purpose; refcounting frees the rest).
        """
        gc.freeze()
        self.loop.call_later(GC_FREEZE_INTERVAL, self._freeze_heap)

    def _tick(self) -> None:
        now = time.monotonic()
        # A late timer (a GC pause, SIGSTOP) ticks the node once, not a burst of
        # catch-up ticks that would start an election the moment the process
        # resumes; but the read lease's clock hears the whole time that passed.
        elapsed = max(1, round((now - self._last_tick_at) / self._tick_interval))
        self._last_tick_at = now
        self.raft.tick(elapsed)
        self._next_tick = max(self._next_tick + self._tick_interval, now)
        self.loop.call_at(self._next_tick, self._tick)

    # --- the Ready contract ---------------------------------------------------------

    def _handle_ready(self) -> None:
        """The Ready contract. Inline (the default): each Ready's record is written
        and fdatasynced before the messages that promise it. With background_sync: a
        Ready's record is written now; the messages that promise it (votes, acknowledgements) wait in
        `_held` until the sync thread reports it durable; a leader's appends leave at
        once (thesis §10.2.1) and the leader counts itself only once persisted()."""
        raft = self.raft
        if self.senders or self._unreachable_snapshots:
            self._settle_transfers()
        if self.member_change is not None and self.member_change.poll(raft, time.monotonic(), self._address_context):
            self.member_change = None
        while raft.has_ready():
            rd = raft.ready()
            if rd.snapshot is not None:
                self._install_snapshot(rd.snapshot)
            for entry in rd.entries:
                if entry.config is not None:
                    self._learn_addresses(entry.command)
            early, after = split_messages(rd)
            for msg in early:
                self._send_peer(msg)
            if early:
                self.loop.flush_now()
            if self.syncer is None:  # inline: durable before anything below promises it
                self.wal.append(rd)
                self._send_all(after)
                for entry in rd.committed_entries:
                    self._apply(entry)
                if rd.read_states or self._reads_confirmed:
                    self._serve_reads(rd.read_states)
                raft.advance(rd)
                continue
            needs_sync = self.wal.write(rd)
            self._written += 1
            last = (rd.entries[-1].index, rd.entries[-1].term) if rd.entries else None
            if needs_sync or self._held:
                self._held.append((self._written, after, last))
            else:
                self._send_all(after)
            for entry in rd.committed_entries:
                self._apply(entry)
            if rd.read_states or self._reads_confirmed:
                self._serve_reads(rd.read_states)
            raft.advance(rd, persisted=False)
        if self._held:
            self.syncer.request(self._written)
        if raft.role != LEADER and self.waiting:
            self._fail_waiting("unknown", "leadership lost before commit")
        if raft.role != LEADER and self._reads_asked:
            # Reads the core had not confirmed died with the leadership; a read
            # changes nothing, so the client may simply ask the new leader.
            asked, self._reads_asked = self._reads_asked, {}
            for conn, request_id, _ in asked.values():
                self._redirect(conn, request_id)
        if self.incoming is not None:
            # The core did not want it (its log already held the snapshot's end).
            self.incoming.path.unlink(missing_ok=True)
            self.incoming, self._incoming_image = None, None
        if raft.membership is not self._linked_membership:
            self._reconcile_links()
        self._maybe_snapshot()

    def _on_synced(self) -> None:
        """On the loop thread, after the sync thread made records durable."""
        assert self.syncer is not None
        synced = self.syncer.synced
        while self._held and self._held[0][0] <= synced:
            _, after, last = self._held.popleft()
            self._send_all(after)
            if last is not None:
                self.raft.persisted(*last)
        self._handle_ready()

    def _send_all(self, messages) -> None:
        for msg in messages:
            self._send_peer(msg)

    def _send_peer(self, msg) -> None:
        if isinstance(msg, InstallSnapshot):
            self._start_transfer(msg)
            return
        link = self._link(msg.dst)
        if link is not None:
            link.send(encode_message(msg))

    # --- members and their addresses ---------------------------------------------------

    def _learn_addresses(self, context: bytes | None) -> None:
        if context is None:
            return
        try:
            book = decode_addresses(context)
        except ValueError as e:
            self.log("address_book_invalid", level="warning", error=str(e))
            return
        for node, (peer, client) in book.items():
            known = self.book.get(node)
            if known is None or (known.peer, known.client) != (peer, client):
                self.book[node] = NodeAddress(node, peer, client, join=True)
                self.log("peer_address_learned", peer_id=node, peer=f"{peer[0]}:{peer[1]}", client=f"{client[0]}:{client[1]}")
                link = self.peers.pop(node, None)
                if link is not None:
                    link.close()

    def _address_context(self, extra: int | None = None, members=None) -> bytes:
        """The address book a configuration entry (or snapshot) carries: its members'."""
        ids = set(members if members is not None else self.raft.membership.members) | ({extra} if extra else set())
        return encode_addresses({i: (self.book[i].peer, self.book[i].client) for i in ids if i in self.book})

    def _link(self, peer: int) -> PeerLink | None:
        link = self.peers.get(peer)
        if link is None:
            address = self.book.get(peer)
            if address is None or not self.running:
                self.log("message_dropped", level="warning", peer_id=peer, reason="no address known for this node")
                return None
            link = self.peers[peer] = PeerLink(self, peer, address.peer)
        return link

    def _reconcile_links(self) -> None:
        """One link per member (and per node the leader still replicates to); links to
        nodes that left are closed."""
        raft = self.raft
        self._linked_membership = raft.membership
        wanted = set(raft.peers) | set(raft.progress)
        for peer in sorted(wanted - set(self.peers)):
            self._link(peer)
        for peer in set(self.peers) - wanted:
            self.peers.pop(peer).close()
            self.log("peer_link_closed", peer_id=peer, reason="not a member")

    def _apply(self, entry: Entry) -> None:
        if entry.config is not None:
            # The configuration took effect when it was appended; to the store it is a no-op.
            self.kv.apply(entry.index, None)
            self.log("config_applied", index=entry.index, membership=entry.config.describe())
            return
        result = self.kv.apply(entry.index, entry.command)
        if entry.command is not None:
            self._bytes_since_snapshot += len(entry.command)
        waiting = self.waiting.pop(entry.index, None)
        if waiting is None:
            return
        if waiting.term == entry.term:
            self._answer(waiting.conn, waiting.request_id, status="ok", result=result)
        else:
            # Another leader's entry holds this index: ours is gone for good.
            self._answer(waiting.conn, waiting.request_id, status="failed", error="overwritten by a newer leader")

    def _fail_waiting(self, status: str, why: str) -> None:
        waiting, self.waiting = self.waiting, {}
        for w in waiting.values():
            self._answer(w.conn, w.request_id, status=status, error=why)

    # --- snapshots --------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self._snapshot_job is not None:
            return
        index = self.kv.last_applied
        since = index - (self.snapshot.index if self.snapshot else 0)
        if since <= 0 or not self._snapshot_due(since):
            return
        if index > self.raft.log.stable_index:
            # Background sync: the WAL write that put this entry in the log (and cut any
            # stale tail after it) is not durable yet; a snapshot past it would come
            # back after a power cut followed by that tail. A later pass takes it.
            return
        term = self.raft.log.term_at(index)
        assert term is not None, "Invariant: applied entries past the snapshot are in the log"
        membership = self.raft.log.membership_at(index)
        meta = SnapshotMeta(index, term, membership, self._address_context(members=membership.members))
        self._snapshot_started = time.monotonic()
        image = self.kv.image()  # a copy: the store goes on applying while the thread writes
        self._snapshot_copy_ms = round((time.monotonic() - self._snapshot_started) * 1000, 1)
        self._bytes_since_snapshot = 0
        floor, sync = self.floor, self.wal.sync_enabled

        def write() -> None:
            try:
                self._snapshot_result = snapshot.write_snapshot(self.data_dir, meta, image, floor=floor, sync=sync)
            except BaseException as e:  # reported on the loop thread
                self._snapshot_result = e
            self._snapshot_done()

        self._snapshot_job = threading.Thread(target=write, name="snapshot", daemon=True)
        self._snapshot_job.start()

    def _snapshot_due(self, entries_since: int) -> bool:
        """Enough entries, and a log at least half as large as the last snapshot, so
        that rewriting a large state stays a fraction of the cost of logging (a
        million keys are not rewritten every 10,000 writes); or a log past
        snapshot_bytes, whatever the state's size."""
        written = self._bytes_since_snapshot
        if written >= self.cfg.snapshot_bytes:
            return True
        last_size = self.snapshot.size if self.snapshot else 0
        return entries_since >= self.cfg.snapshot_entries and written >= last_size // 2

    def _on_snapshot_written(self) -> None:
        """On the loop thread: the snapshot is durable (or failed). Compact the core's
        log and delete what the previous snapshot makes useless."""
        job, result = self._snapshot_job, self._snapshot_result
        if job is None or result is None:
            return
        job.join()
        self._snapshot_job, self._snapshot_result = None, None
        ms = round((time.monotonic() - self._snapshot_started) * 1000, 1)
        if isinstance(result, BaseException):
            self.log("snapshot_failed", level="error", error=f"{type(result).__name__}: {result}", ms=ms)
            return
        previous = self.snapshot
        if previous is not None and result.index <= previous.index:
            result.path.unlink(missing_ok=True)  # an installed snapshot overtook it
            return
        self.snapshot = result
        keep = self.cfg.snapshot_entries // 2  # entries a follower a little behind can still get by append
        self.raft.compact(max(result.index - keep, self.raft.log.snapshot_index))
        # One older snapshot and the log behind it stay, so a newest snapshot found
        # corrupt on restart can be survived.
        removed = self.wal.remove_covered(previous.index if previous else 0, self.floor)
        keep_files = [result.path] + ([previous.path] if previous else [])
        old = snapshot.remove_older(self.data_dir, keep_files)
        snapshot.failpoint("wal_compacted")
        self.log(
            "snapshot_saved", index=result.index, snapshot_term=result.term, bytes=result.size, keys=len(self.kv.data), ms=ms,
            copy_ms=self._snapshot_copy_ms,
            log_entries=len(self.raft.log), wal_segments_removed=len(removed), snapshots_removed=len(old),
        )

    def _install_snapshot(self, meta: SnapshotMeta) -> None:
        """Ready.snapshot: replace state machine and log by the snapshot received."""
        inc = self.incoming
        if inc is None or (inc.meta.index, inc.meta.term) != (meta.index, meta.term):
            raise RuntimeError(f"the core installs snapshot {meta.term}/{meta.index}, which this host never received")
        self.incoming = None
        started = time.monotonic()
        if self._held:  # background sync: what was written before becomes durable first
            self.wal.sync()
            while self._held:
                self._send_all(self._held.popleft()[1])
        # A new segment as the floor: entries written before it belong to the log
        # the install drops, and must not come back on a restart.
        floor = self.wal.cut()
        final = self.data_dir / snapshot.snapshot_name(meta.index, meta.term, floor)
        os.rename(inc.path, final)
        if self.wal.sync_enabled:
            fsync_dir(self.data_dir)
        snapshot.failpoint("snapshot_install_renamed")
        image, self._incoming_image = self._incoming_image, None
        assert image is not None
        self.kv = KeyValueStore()
        self.kv.restore(meta.index, image)
        self._learn_addresses(meta.context)
        self.floor = floor
        self.snapshot = SnapshotFile(final, meta.index, meta.term, floor, final.stat().st_size)
        self._bytes_since_snapshot = 0
        removed = self.wal.remove_covered(meta.index, floor)
        old = snapshot.remove_older(self.data_dir, [final])
        self.log(
            "snapshot_installed", index=meta.index, snapshot_term=meta.term, leader=inc.leader, bytes=self.snapshot.size,
            keys=len(self.kv.data), wal_segments_removed=len(removed), snapshots_removed=len(old),
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _start_transfer(self, msg: InstallSnapshot) -> None:
        peer = msg.dst
        if peer in self.senders:
            return  # one stream per follower; the core waits in its SNAPSHOT state
        snap = self.snapshot
        if snap is None or snap.index < msg.snapshot.index:
            raise RuntimeError(f"the core asks to send snapshot {msg.snapshot.index}, the newest on disk is {snap}")
        link = self._link(peer)
        if link is None or not link.connected:
            # Nothing to stream to; the core retries from a later heartbeat.
            self._unreachable_snapshots.add(peer)
            return
        self.senders[peer] = sender = SnapshotSender(
            me=self.id, peer=peer, term=msg.term, snap=snap, chunk_bytes=self.cfg.snapshot_chunk_bytes,
            window=SNAPSHOT_WINDOW_CHUNKS * self.cfg.snapshot_chunk_bytes,
            send=lambda chunk: link.send(encode_message(chunk)), now=time.monotonic(),
        )
        self.log("snapshot_send_started", peer=peer, index=snap.index, snapshot_term=snap.term, bytes=sender.total)
        sender.pump()

    def _settle_transfers(self) -> None:
        """Report finished, failed and stalled transfers to the core (outside a Ready)."""
        for peer in self._unreachable_snapshots:
            self.raft.report_snapshot(peer, success=False)
        self._unreachable_snapshots.clear()
        now = time.monotonic()
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
                "snapshot_send_finished", level="info" if sender.outcome else "warning", peer=peer, index=sender.snap.index,
                success=sender.outcome, bytes=sender.acked, ms=round((now - sender.started) * 1000, 1),
            )
            self.raft.report_snapshot(peer, success=sender.outcome)

    def _on_snapshot_chunk(self, chunk: SnapshotChunk) -> None:
        ack, done, refused = self.receiver.on_chunk(chunk, self.raft.current_term)
        if refused is not None:
            self.log("snapshot_chunk_refused", level="warning", leader=chunk.src, offset=chunk.offset, reason=refused)
        elif chunk.offset == 0:
            self.log("snapshot_receive_started", leader=chunk.src, index=chunk.index, bytes=chunk.total)
        if done is None:
            self._send_frame(chunk.src, ack)
            return
        self.log("snapshot_received", leader=done.leader, index=done.meta.index, snapshot_term=done.meta.term)
        if self._loader is not None:  # still loading another one: let the leader retry later
            done.path.unlink(missing_ok=True)
            self._send_frame(chunk.src, dataclasses.replace(ack, ok=False, next_offset=0))
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
            self._snapshot_loaded()

        self._loader = threading.Thread(target=load, name="snapshot-load", daemon=True)
        self._loader.start()

    def _on_snapshot_loaded(self) -> None:
        loader, loaded = self._loader, self._loaded
        if loader is None or loaded is None:
            return
        loader.join()
        self._loader, self._loaded = None, None
        done, ack, result = loaded
        if isinstance(result, BaseException):
            self.log("snapshot_load_failed", level="error", index=done.meta.index, error=f"{type(result).__name__}: {result}")
            done.path.unlink(missing_ok=True)
            self._send_frame(done.leader, dataclasses.replace(ack, ok=False, next_offset=0))
            return
        if self.incoming is not None:
            self.incoming.path.unlink(missing_ok=True)
        self.incoming, self._incoming_image = done, result
        self.raft.step(InstallSnapshot(src=done.leader, dst=self.id, term=done.term, snapshot=done.meta))
        self._send_frame(done.leader, ack)

    def _send_frame(self, peer: int, frame) -> None:
        link = self._link(peer)
        if link is not None:
            link.send(encode_message(frame))

    # --- peers ----------------------------------------------------------------------

    def _accept_peer(self, sock: socket.socket, addr: tuple) -> None:
        self._accept(sock, f"peer-in-{addr[0]}:{addr[1]}", self._on_peer_frame)

    def _accept(self, sock: socket.socket, name: str, on_frame: Callable[[Connection, bytes], None]) -> None:
        conn = Connection(
            self.loop, sock, name=name, on_frame=on_frame, on_close=self._on_inbound_close,
            max_frame=self.cfg.max_frame, max_buffer=self.cfg.peer_buffer, log=self.log,
        )
        self.inbound.add(conn)

    def _on_peer_frame(self, conn: Connection, body: bytes) -> None:
        try:
            msg = decode_message(body)
        except RemoteProtocolError as e:
            self._reject_frame(conn, str(e))
            return
        if msg.dst != self.id or msg.src not in self.book or msg.src == self.id:
            self._reject_frame(conn, f"message from {msg.src} for {msg.dst} on node {self.id}")
            return
        speaker = self._greeted.get(conn)
        if speaker is None:
            if isinstance(msg, PeerHello):
                self._on_hello(conn, msg)
            else:
                self._reject_frame(conn, f"{type(msg).__name__} from {msg.src} before its hello")
            return
        if isinstance(msg, (PeerHello, PeerRefused)) or msg.src != speaker:
            self._reject_frame(conn, f"{type(msg).__name__} from {msg.src} on node {speaker}'s connection")
            return
        link = self.peers.get(msg.src)
        if link is not None and link.conn is None:
            link.redial_now()
        if isinstance(msg, SnapshotChunk):
            self._on_snapshot_chunk(msg)
        elif isinstance(msg, SnapshotAck):
            sender = self.senders.get(msg.src)
            if sender is not None:
                sender.on_ack(msg, time.monotonic())
        else:
            self.raft.step(msg)

    def _reject_frame(self, conn: Connection, error: str) -> None:
        """A frame we cannot accept costs the sender its connection, nothing more."""
        self.log("frame_error", level="warning", conn=conn.name, error=error)
        conn.close("protocol error")

    def _on_hello(self, conn: Connection, hello: PeerHello) -> None:
        """Admit the connection if the peer still has the data it had when first heard
        (raftproc.runtime.identity); its frames count only then."""
        try:
            refusal = self.known_peers.admit(hello.src, hello.incarnation)
        except OSError as e:
            self.log("peer_record_failed", level="error", peer_id=hello.src, error=str(e))
            conn.close("cannot record the peer's incarnation")
            return
        if refusal is not None:
            if self._refused_logged.get(hello.src) != refusal:  # once, not at every redial
                self._refused_logged[hello.src] = refusal
                self.log("peer_refused", level="error", peer_id=hello.src, reason=refusal)
            conn.send(encode_message(PeerRefused(self.id, hello.src, refusal)))
            conn.flush()  # a best effort: the close below drops what is still queued
            conn.close("peer refused")
            return
        self._greeted[conn] = hello.src

    def on_refused(self, peer: int, reason: str) -> None:
        if self._refused_by.get(peer) != reason:  # once, not at every redial
            self._refused_by[peer] = reason
            self.log("refused_by_peer", level="error", peer_id=peer, reason=reason)

    def _on_inbound_close(self, conn: Connection, reason: str) -> None:
        self.inbound.discard(conn)
        self._greeted.pop(conn, None)

    # --- clients --------------------------------------------------------------------

    def _accept_client(self, sock: socket.socket, addr: tuple) -> None:
        self._accept(sock, f"client-{addr[0]}:{addr[1]}", self._on_client_frame)

    def _on_client_frame(self, conn: Connection, body: bytes) -> None:
        try:
            req = decode_client_request(body)
        except RemoteProtocolError as e:
            self._reject_frame(conn, str(e))
            return
        if req["t"] == "status":
            self._answer(conn, req["id"], status="ok", result=self.status())
            return
        if req["t"] == "transfer":
            self._transfer(conn, req)
            return
        if req["t"] == "member":
            self._member(conn, req)
            return
        raft = self.raft
        if raft.role != LEADER:
            self._redirect(conn, req["id"])
            return
        if req.get("read", "log") != "log":
            self._read(conn, req)
            return
        cmd = Command(req["op"], req["key"], req.get("value"), req.get("expect"), req["client"], req["seq"])
        try:
            index, term = raft.propose(cmd.encode())
        except NotLeader:
            self._redirect(conn, req["id"])
            return
        except TransferInProgress as e:
            # Never reached the log: the client retries and finds the new leader.
            self._answer(conn, req["id"], status="no_leader", error=str(e))
            return
        self.waiting[index] = Waiting(term, conn, req["id"])

    def _read(self, conn: Connection, req: dict[str, Any]) -> None:
        """A linearizable read without a log entry (ReadIndex or lease, in the core)."""
        self._read_token += 1
        token = self._read_token
        try:
            self.raft.read_index(token, lease=req["read"] == "lease")
        except NotLeader:
            self._redirect(conn, req["id"])
            return
        self._reads_asked[token] = (conn, req["id"], req["key"])

    def _serve_reads(self, read_states) -> None:
        """Confirmed reads wait until the store has applied their index."""
        for rs in read_states:
            asked = self._reads_asked.pop(rs.request, None)
            if asked is not None:
                heapq.heappush(self._reads_confirmed, (rs.index, rs.request, asked))
        confirmed, applied = self._reads_confirmed, self.kv.last_applied
        while confirmed and confirmed[0][0] <= applied:
            _, _, (conn, request_id, key) = heapq.heappop(confirmed)
            self._answer(conn, request_id, status="ok", result={"ok": True, "value": self.kv.data.get(key)})

    def _transfer(self, conn: Connection, req: dict[str, Any]) -> None:
        """Start handing leadership over; the client watches for the new leader."""
        raft = self.raft
        if raft.role != LEADER:
            self._redirect(conn, req["id"])
            return
        target = req.get("target")
        if target is None:  # the voter with the longest log, among those connected
            voters = [p for p in raft.membership.voters if p != self.id]
            live = [p for p in voters if p in self.peers and self.peers[p].connected] or voters
            target = max(live, key=lambda p: raft.progress[p].match_index) if live else None
        try:
            if target is None:
                raise ValueError("a single-node cluster has nobody to hand leadership to")
            raft.transfer_leadership(target)
        except ValueError as e:
            self._answer(conn, req["id"], status="error", error=str(e))
            return
        self._answer(conn, req["id"], status="ok", result={"target": target})

    def _member(self, conn: Connection, req: dict[str, Any]) -> None:
        """`member list | add | remove` (raftproc.runtime.members), on the leader."""
        raft = self.raft
        if raft.role != LEADER:
            self._redirect(conn, req["id"])
            return
        if req["op"] == "list":
            self._answer(conn, req["id"], status="ok", result=self._member_list())
            return
        if self.member_change is not None:
            self._answer(conn, req["id"], status="error", error=f"node {self.id} is already running a membership change")
            return
        node = req["node"]
        if req["op"] == "add":
            peer, client = req["addresses"]
            known = self.book.get(node)
            if node in raft.membership.members and known is not None and (known.peer, known.client) != (peer, client):
                self._answer(conn, req["id"], status="error", error=f"node {node} is a member at another address (peer {known.peer[0]}:{known.peer[1]})")
                return
            if node not in raft.membership.members:
                self.book[node] = NodeAddress(node, peer, client, join=True)
        request_id = req["id"]
        self.member_change = MemberChange(
            req["op"], node, time.monotonic() + MEMBER_CHANGE_TIMEOUT,
            answer=lambda **fields: self._answer(conn, request_id, **fields),
        )
        self.log("member_change_started", op=req["op"], peer_id=node)

    def _member_list(self) -> dict[str, Any]:
        raft = self.raft
        nodes = {}
        for node in raft.membership.members:
            a = self.book.get(node)
            role = "voter" if raft.membership.is_voter(node) else "learner"
            pr = raft.progress.get(node)
            nodes[node] = {
                "role": role,
                "peer": f"{a.peer[0]}:{a.peer[1]}" if a else None,
                "client": f"{a.client[0]}:{a.client[1]}" if a else None,
                "match_index": raft.log.last_index if node == self.id else (pr.match_index if pr else 0),
            }
        return {"leader": self.id, "term": raft.current_term, "last_index": raft.log.last_index, **describe(raft.membership), "nodes": nodes}

    def _redirect(self, conn: Connection, request_id: int) -> None:
        leader = self.raft.leader_id
        if leader is None or leader == self.id:
            self._answer(conn, request_id, status="no_leader")
            return
        if leader not in self.book:
            self._answer(conn, request_id, status="no_leader")
            return
        host, port = self.book[leader].client
        self.log("client_redirected", level="debug", leader=leader)
        self._answer(conn, request_id, status="redirect", leader=leader, leader_addr=f"{host}:{port}")

    def _answer(self, conn: Connection, request_id: int, **fields: Any) -> None:
        conn.send(codec.encode({"t": "resp", "id": request_id, **fields}))

    def status(self) -> dict[str, Any]:
        r = self.raft
        return {
            "node": self.id,
            "pid": os.getpid(),
            "role": r.role,
            "term": r.current_term,
            "leader": r.leader_id,
            "commit_index": r.commit_index,
            "last_applied": self.kv.last_applied,
            "last_index": r.log.last_index,
            "snapshot_index": self.snapshot.index if self.snapshot else 0,
            "snapshot_bytes": self.snapshot.size if self.snapshot else 0,
            "log_entries": len(r.log),
            "wal_bytes": self.wal.disk_bytes(),
            "snapshots_sending": {p: [s.acked, s.total] for p, s in self.senders.items()},
            "transferring_to": r.transferee,
            "membership": describe(r.membership),
            "keys": len(self.kv.data),
            "log_digest": self.kv.log_digest(),
            "state_digest": self.kv.state_digest(),
        }
