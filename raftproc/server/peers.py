"""Peers: the node's links to the other nodes, and the address book.

One outbound connection per peer carries everything this node sends it; it is
redialled with backoff when it drops (at once when the peer speaks to us first,
so a restarted node hears its leader before its election timer fires). Inbound
connections carry what peers send us: each must open with a hello
(raftproc.runtime.identity) naming a node we know and an incarnation we accept;
frames count only after it, and only from the node that said hello. Under TLS
(raftproc.runtime.tls) a hello as node N counts only on a connection that
presented node N's certificate, and a link we dial counts only if the far end
presents the certificate of the node we meant to reach. A frame that
breaks these rules costs its connection, never the process.

Every frame to or from a peer passes two optional observers here, at the one place
all of them pass: the link shaper (raftproc.server.links: injected cuts and delays,
for demos and tests) and the event feed the live page reads (raftproc.server.watch).

The address book starts as the config file's nodes; configuration entries and
snapshots carry the addresses of their members, newest wins (`learn`). Links to
nodes that left are closed (`reconcile`).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from typing import Any, Protocol

from raftproc.config import NodeAddress
from raftproc.core.messages import Message
from raftproc.runtime.codec import (
    RemoteProtocolError,
    decode_message,
    encode_message,
)
from raftproc.runtime.entries import decode_addresses, encode_addresses
from raftproc.runtime.identity import KnownPeers, PeerHello, PeerRefused
from raftproc.runtime.logging import SparseLog
from raftproc.runtime.loop import Backoff, Connection, ConnectionSettings, EventLoop, Listener, dial, idle
from raftproc.runtime.tls import TlsContexts, node_identity
from raftproc.runtime.transfer import SnapshotAck, SnapshotChunk
from raftproc.server.links import LinkShaper
from raftproc.server.watch import EventFeed

Log = Callable[..., None]
# What a peer may send once it said hello: Raft messages and snapshot streams.
Delivered = Message | SnapshotChunk | SnapshotAck


class PeerReceiver(Protocol):
    def on_frame(self, frame: Delivered) -> None:
        """An admitted frame; raises FrameRefused to close its connection."""

    def on_link_down(self, peer: int) -> None:
        """A link that was up broke."""


class FrameRefused(Exception):
    """Raised by the on_frame handler: the frame was well formed but the node will not
    take it from this sender (it contradicts what the node knows is committed). The
    connection it came on is closed; nothing else happens."""


class PeerLink:
    """The one outbound connection to a peer, redialled with backoff when it drops."""

    def __init__(self, peers: Peers, peer_id: int, address: tuple[str, int]) -> None:
        self.peers = peers
        self.peer_id = peer_id
        self.address = address
        self.backoff = Backoff(peers.rng)
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
        sock = dial(self.address)
        p = self.peers
        self.conn = p.settings.open(
            p.loop,
            sock,
            name=f"peer-out-{self.peer_id}",
            on_frame=self._on_frame,
            on_close=self._on_close,
            on_connected=self._on_connected,
            dialled=True,
        )
        # Queued ahead of anything else, so it is the connection's first frame.
        self.conn.send(encode_message(PeerHello(p.me, self.peer_id, p.incarnation)))

    def _on_connected(self, conn: Connection) -> None:
        if self.peers.tls is not None and conn.identity != node_identity(self.peer_id):
            self.peers.remote_log(
                "peer_identity_refused",
                level="error",
                peer_id=self.peer_id,
                conn=conn.name,
                reason=f"dialled node {self.peer_id}, the certificate names {conn.identity or 'nobody we know'}",
            )
            conn.close("wrong certificate")
            return
        self.connected = True
        self.backoff.reset()
        self.peers.log("peer_connected", peer=self.peer_id)

    def _on_frame(self, conn: Connection, body: bytes) -> None:
        try:
            msg = decode_message(body)
        except RemoteProtocolError:
            msg = None
        if isinstance(msg, PeerRefused) and msg.src == self.peer_id and msg.dst == self.peers.me:
            self.peers.refused_by(self.peer_id, msg.reason)
            conn.close("refused by the peer")
            return
        self.peers.remote_log("frame_error", level="warning", conn=conn.name, error="unexpected frame on an outbound link")
        conn.close("protocol error")

    def redial_now(self) -> None:
        if self.conn is None and self.peers.running and not self.closed:
            self._generation += 1
            self.backoff.reset()
            self._dial()

    def _on_close(self, conn: Connection, reason: str) -> None:
        self.conn = None
        if self.connected:
            self.connected = False
            self.peers.log("peer_disconnected", level="warning", peer=self.peer_id, reason=reason)
            assert self.peers.receiver is not None
            self.peers.receiver.on_link_down(self.peer_id)
        if self.peers.running and not self.closed:
            generation = self._generation
            self.peers.loop.call_later(self.backoff.next_delay(), lambda: self._redial(generation))

    def _redial(self, generation: int) -> None:
        if generation == self._generation and self.conn is None and self.peers.running and not self.closed:
            self._dial()


class Peers:
    def __init__(
        self,
        *,
        me: int,
        incarnation: int,
        book: dict[int, NodeAddress],
        known_peers: KnownPeers,
        loop: EventLoop,
        rng: random.Random,
        max_frame: int,
        max_buffer: int,
        log: Log,
        tls: TlsContexts | None = None,
        handshake_timeout: float = 5.0,
        shaper: LinkShaper | None = None,
        feed: EventFeed | None = None,
        logged_incarnations: Callable[[], dict[int, int]] = dict,
    ) -> None:
        """`logged_incarnations()`: members' incarnations as the applied log records them
        (raftproc.kv.state_machine), checked before this node's own record.
        `tls`: mutual TLS on every link (None: plaintext). `shaper` drops and delays frames as the
        injected link faults say; `feed` hears of every frame sent and taken. Admitted frames and
        broken links go to the receiver named by `deliver_to`, before `listen`."""
        self.me = me
        self.incarnation = incarnation
        self.book = book
        self.known_peers = known_peers
        self.logged_incarnations = logged_incarnations
        self.loop = loop
        self.rng = rng
        self.max_frame = max_frame
        self.max_buffer = max_buffer
        self.log = log
        self.remote_log = SparseLog(log)  # for what any remote party can repeat at will
        self.receiver: PeerReceiver | None = None
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.settings = ConnectionSettings(max_frame, max_buffer, handshake_timeout, self.remote_log, tls)
        self.shaper = shaper or LinkShaper(loop, max_buffer)
        self.feed = feed or EventFeed(me, loop.clock)
        self.links: dict[int, PeerLink] = {}
        self.inbound: set[Connection] = set()
        self._greeted: dict[Connection, int] = {}  # inbound connection -> the node that said hello
        self._refused_logged: dict[int, str] = {}  # peer -> why we refused it (logged once)
        self._refused_by: dict[int, str] = {}  # peer -> why it refused us (logged once)
        self.running = False
        self.listener: Listener | None = None

    def deliver_to(self, receiver: PeerReceiver) -> None:
        """The one receiver of what peers send (the peer transport, which itself needs
        these links to send): named once, after both exist."""
        self.receiver = receiver

    def listen(self, address: tuple[str, int]) -> None:
        assert self.receiver is not None, "deliver_to() names the receiver before listen()"
        self.listener = Listener(self.loop, address, self._accept, log=self.log)
        self.running = True

    def close(self) -> None:
        self.running = False
        for conn in list(self.inbound):
            conn.close("node shutting down")
        for link in self.links.values():
            if link.conn is not None:
                link.conn.close("node shutting down")
        if self.listener is not None:
            self.listener.close()

    def close_idle(self, idle_seconds: float, first_frame_seconds: float) -> None:
        """Inbound connections that completed no frame for `idle_seconds` (a live peer
        sends a heartbeat every few ticks), or no hello within `first_frame_seconds`,
        are closed."""
        for conn in idle(self.inbound, self.loop.clock(), idle_seconds, first_frame_seconds):
            self.remote_log("connection_idle_closed", level="info", conn=conn.name)
            conn.close("idle")

    # --- sending ------------------------------------------------------------------

    def send(self, msg: Message | Any) -> bool:
        """Queue `msg` for its peer; False when it was dropped."""
        delivered = False
        if not self.shaper.cut_to(msg.dst):
            link = self.link(msg.dst)
            delivered = link is not None and self.shaper.send(msg.dst, encode_message(msg), link.send)
        if self.feed.watched:
            self.feed.sent(msg, delivered)
        return delivered

    def is_connected(self, peer: int) -> bool:
        link = self.links.get(peer)
        return link is not None and link.connected

    def link(self, peer: int) -> PeerLink | None:
        link = self.links.get(peer)
        if link is None:
            address = self.book.get(peer)
            if address is None or not self.running:
                self.log("message_dropped", level="warning", peer_id=peer, reason="no address known for this node")
                return None
            link = self.links[peer] = PeerLink(self, peer, address.peer)
        return link

    def reconcile(self, wanted: set[int]) -> None:
        """One link per node in `wanted`; links to any other node are closed."""
        for peer in sorted(wanted - set(self.links)):
            self.link(peer)
        for peer in set(self.links) - wanted:
            self.links.pop(peer).close()
            self.log("peer_link_closed", peer_id=peer, reason="not a member")

    # --- the address book ---------------------------------------------------------------

    def learn(self, addresses: bytes | None) -> None:
        """Addresses a configuration entry or snapshot carries; a changed address
        closes the old link (the next send dials the new one)."""
        if addresses is None:
            return
        try:
            book = decode_addresses(addresses)
        except ValueError as e:
            self.log("address_book_invalid", level="warning", error=str(e))
            return
        for node, (peer, client) in book.items():
            known = self.book.get(node)
            if known is None or (known.peer, known.client) != (peer, client):
                self.book[node] = NodeAddress(node, peer, client, join=True)
                self.log("peer_address_learned", peer_id=node, peer=f"{peer[0]}:{peer[1]}", client=f"{client[0]}:{client[1]}")
                link = self.links.pop(node, None)
                if link is not None:
                    link.close()

    def add_joining(self, node: int, peer: tuple[str, int], client: tuple[str, int]) -> None:
        """The addresses a `member add` names for a node that is not a member yet."""
        self.book[node] = NodeAddress(node, peer, client, join=True)

    def address_book(self, members) -> bytes:
        """The address book a configuration entry (or snapshot) carries: its members'."""
        return encode_addresses({i: (self.book[i].peer, self.book[i].client) for i in members if i in self.book})

    # --- inbound ------------------------------------------------------------------

    def _accept(self, sock: socket.socket, addr: tuple) -> None:
        conn = self.settings.open(
            self.loop, sock, name=f"peer-in-{addr[0]}:{addr[1]}", on_frame=self._on_inbound_frame, on_close=self._on_inbound_close
        )
        if not conn.closed:
            self.inbound.add(conn)

    def _on_inbound_frame(self, conn: Connection, body: bytes) -> None:
        try:
            msg = decode_message(body)
        except RemoteProtocolError as e:
            self._reject(conn, str(e))
            return
        if msg.dst != self.me or msg.src not in self.book or msg.src == self.me:
            self._reject(conn, f"message from {msg.src} for {msg.dst} on node {self.me}")
            return
        speaker = self._greeted.get(conn)
        if speaker is None:
            if isinstance(msg, PeerHello) and self.tls is not None and conn.identity != node_identity(msg.src):
                self._reject(conn, f"hello as node {msg.src} on a connection whose certificate names {conn.identity or 'no node'}")
            elif isinstance(msg, PeerHello):
                self._on_hello(conn, msg)
            else:
                self._reject(conn, f"{type(msg).__name__} from {msg.src} before its hello")
            return
        if isinstance(msg, (PeerHello, PeerRefused)) or msg.src != speaker:
            self._reject(conn, f"{type(msg).__name__} from {msg.src} on node {speaker}'s connection")
            return
        link = self.links.get(msg.src)
        if link is not None and link.conn is None:
            link.redial_now()
        if self.shaper.cut_from(msg.src):
            return  # an injected cut: as if it never arrived
        if self.feed.watched:
            self.feed.received(msg)
        assert self.receiver is not None
        try:
            self.receiver.on_frame(msg)
        except FrameRefused as e:
            self._reject(conn, f"refused from node {msg.src}: {e}")

    def _reject(self, conn: Connection, error: str) -> None:
        """A frame we cannot accept costs the sender its connection, nothing more."""
        self.remote_log("frame_error", level="warning", conn=conn.name, error=error)
        conn.close("protocol error")

    def _on_hello(self, conn: Connection, hello: PeerHello) -> None:
        """Admit the connection if the peer still has the data it had when first heard
        (raftproc.runtime.identity); its frames count only then."""
        try:
            refusal = self._admission(hello)
        except OSError as e:
            self.log("peer_record_failed", level="error", peer_id=hello.src, error=str(e))
            conn.close("cannot record the peer's incarnation")
            return
        if refusal is not None:
            if self._refused_logged.get(hello.src) != refusal:  # once, not at every redial
                self._refused_logged[hello.src] = refusal
                self.log("peer_refused", level="error", peer_id=hello.src, reason=refusal)
            conn.send(encode_message(PeerRefused(self.me, hello.src, refusal)))
            conn.flush()  # a best effort: the close below drops what is still queued
            conn.close("peer refused")
            return
        self._greeted[conn] = hello.src
        # The peer is up: if our own link to it is waiting out a backoff, dial now, so
        # that it hears our hello (and records our incarnation) without delay.
        link = self.links.get(hello.src)
        if link is not None and link.conn is None:
            link.redial_now()

    def _admission(self, hello: PeerHello) -> str | None:
        """The log's record of the peer's incarnation first (it covers peers this node
        never met), then what this node heard itself."""
        logged = self.logged_incarnations().get(hello.src)
        if logged is None:
            return self.known_peers.admit(hello.src, hello.incarnation)
        if logged != hello.incarnation:
            return (
                f"node {hello.src} came back with other data than the cluster's log recorded for it: it lost what it "
                "promised; rebuild it (supervisor.py rebuild, docs/storage.md)"
            )
        self.known_peers.record(hello.src, hello.incarnation)
        return None

    def forget_removed(self, members: tuple[int, ...] | frozenset[int] | set[int]) -> None:
        """A configuration without some peers was applied: their incarnations no longer
        bind (raftproc.runtime.identity), so each can come back rebuilt."""
        gone = sorted(p for p in self.known_peers.seen if p not in members and p != self.me)
        if not gone:
            return
        try:
            self.known_peers.forget(gone)
        except OSError as e:
            self.log("peer_record_failed", level="error", peer_ids=gone, error=str(e))
            return
        for p in gone:
            self._refused_logged.pop(p, None)
        self.log("peer_incarnations_forgotten", peer_ids=gone)

    def refused_by(self, peer: int, reason: str) -> None:
        if self._refused_by.get(peer) != reason:  # once, not at every redial
            self._refused_by[peer] = reason
            self.log("refused_by_peer", level="error", peer_id=peer, reason=reason)

    def _on_inbound_close(self, conn: Connection, reason: str) -> None:
        self.inbound.discard(conn)
        self._greeted.pop(conn, None)
