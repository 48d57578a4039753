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

Client answers are honest about what is known:
- "ok": the command was applied (its result says how, e.g. a cas mismatch);
- "redirect" / "no_leader" / "failed" / "error": it certainly was not applied and
  will not be (it never reached a log, or another entry won its index);
- "unknown": it reached a leader's log and may still commit. The client retries
  with the same sequence number; the session table applies it at most once.
"""

from __future__ import annotations

import gc
import os
import random
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from raftproc.config import ClusterConfig
from raftproc.core.messages import Entry
from raftproc.core.node import LEADER, NotLeader, RaftNode
from raftproc.core.ready import split_messages
from raftproc.kv.commands import Command
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime import codec
from raftproc.runtime.codec import RemoteProtocolError, decode_client_request, decode_message, encode_message
from raftproc.runtime.logging import core_logger
from raftproc.runtime.loop import Backoff, Connection, EventLoop, Listener
from raftproc.runtime.wal import BackgroundSync, WriteAheadLog

Log = Callable[..., None]
GC_FREEZE_INTERVAL = 5.0  # seconds


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
        self._generation = 0  # a redial scheduled under an older generation is void
        self._dial()

    def send(self, body: bytes) -> None:
        if self.conn is not None:
            self.conn.send(body)

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

    def _on_connected(self, conn: Connection) -> None:
        self.connected = True
        self.backoff.reset()
        self.host.log("peer_connected", peer=self.peer_id)

    def _on_frame(self, conn: Connection, body: bytes) -> None:
        self.host.log("frame_error", level="warning", conn=conn.name, error="unexpected frame on an outbound link")
        conn.close("protocol error")

    def redial_now(self) -> None:
        """The peer just spoke to us, so it is up: stop waiting out the backoff. A
        restarted node then hears its leader before its election timer fires."""
        if self.conn is None and self.host.running:
            self._generation += 1
            self.backoff.reset()
            self._dial()

    def _on_close(self, conn: Connection, reason: str) -> None:
        self.conn = None
        if self.connected:
            self.connected = False
            self.host.log("peer_disconnected", level="warning", peer=self.peer_id, reason=reason)
            self.host.raft.report_unreachable(self.peer_id)
        if self.host.running:
            generation = self._generation
            self.host.loop.call_later(self.backoff.next_delay(), lambda: self._redial(generation))

    def _redial(self, generation: int) -> None:
        if generation == self._generation and self.conn is None and self.host.running:
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

        started = time.monotonic()
        self.wal, rec = WriteAheadLog.open(cfg.node_data_dir(node_id), warn=lambda event, **f: log(event, level="warning", **f))
        self.raft = RaftNode(
            node_id, cfg.nodes, rng=self.rng, config=cfg.raft(), hard_state=rec.hard_state,
            entries=rec.entries, log=core_logger(log),
        )
        log(
            "wal_recovered", term=rec.hard_state.current_term, role=self.raft.role, segments=rec.segments, records=rec.records, entries=len(rec.entries),
            voted_for=rec.hard_state.voted_for, commit_index=rec.hard_state.commit_index,
            torn_tail_bytes=rec.torn_tail_bytes, ms=round((time.monotonic() - started) * 1000, 1),
        )
        self.kv = KeyValueStore()
        self.waiting: dict[int, Waiting] = {}
        self.inbound: set[Connection] = set()
        self.peer_listener = Listener(self.loop, me.peer, self._accept_peer)
        self.client_listener = Listener(self.loop, me.client, self._accept_client)
        self.running = True
        self.peers = {p: PeerLink(self, p, cfg.nodes[p].peer) for p in cfg.nodes if p != node_id}
        self._written = 0  # Ready records written so far
        self._held: deque[tuple[int, list, tuple[int, int] | None]] = deque()
        self.syncer: BackgroundSync | None = None
        if cfg.background_sync:
            wake = self.loop.make_waker(self._on_synced)
            self.syncer = BackgroundSync(self.wal, lambda seq: wake())
        self.loop.after_pass.append(self._handle_ready)
        self._tick_interval = cfg.tick_ms / 1000
        self._next_tick = time.monotonic() + self._tick_interval
        self.loop.call_at(self._next_tick, self._tick)
        self.loop.call_later(GC_FREEZE_INTERVAL, self._freeze_heap)
        log("node_started", term=self.raft.current_term, role=self.raft.role, peer=f"{me.peer[0]}:{me.peer[1]}", client=f"{me.client[0]}:{me.client[1]}", pid=os.getpid())

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
        self.raft.tick()
        now = time.monotonic()
        # A late timer (a GC pause, SIGSTOP) ticks once, not a burst of catch-up ticks
        # that would start an election the moment the process resumes.
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
        while raft.has_ready():
            rd = raft.ready()
            early, after = split_messages(rd)
            for msg in early:
                self.peers[msg.dst].send(encode_message(msg))
            if early:
                self.loop.flush_now()
            if self.syncer is None:  # inline: durable before anything below promises it
                self.wal.append(rd)
                self._send_all(after)
                for entry in rd.committed_entries:
                    self._apply(entry)
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
            raft.advance(rd, persisted=False)
        if self._held:
            self.syncer.request(self._written)
        if raft.role != LEADER and self.waiting:
            self._fail_waiting("unknown", "leadership lost before commit")

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
            self.peers[msg.dst].send(encode_message(msg))

    def _apply(self, entry: Entry) -> None:
        result = self.kv.apply(entry.index, entry.command)
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
        if msg.dst != self.id or msg.src not in self.peers:
            self._reject_frame(conn, f"message from {msg.src} for {msg.dst} on node {self.id}")
            return
        link = self.peers[msg.src]
        if link.conn is None:
            link.redial_now()
        self.raft.step(msg)

    def _reject_frame(self, conn: Connection, error: str) -> None:
        """A frame we cannot accept costs the sender its connection, nothing more."""
        self.log("frame_error", level="warning", conn=conn.name, error=error)
        conn.close("protocol error")

    def _on_inbound_close(self, conn: Connection, reason: str) -> None:
        self.inbound.discard(conn)

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
        raft = self.raft
        if raft.role != LEADER:
            self._redirect(conn, req["id"])
            return
        cmd = Command(req["op"], req["key"], req.get("value"), req.get("expect"), req["client"], req["seq"])
        try:
            index, term = raft.propose(cmd.encode())
        except NotLeader:
            self._redirect(conn, req["id"])
            return
        self.waiting[index] = Waiting(term, conn, req["id"])

    def _redirect(self, conn: Connection, request_id: int) -> None:
        leader = self.raft.leader_id
        if leader is None or leader == self.id:
            self._answer(conn, request_id, status="no_leader")
            return
        host, port = self.cfg.nodes[leader].client
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
            "keys": len(self.kv.data),
            "log_digest": self.kv.log_digest(),
            "state_digest": self.kv.state_digest(),
        }
