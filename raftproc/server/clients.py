"""The client service: requests from clients in, answers out.

Each frame is decoded into one typed request (raftproc.runtime.requests) and
dispatched by its type. Writes and log reads are proposed to the core and answered
when their entry is applied (this room is the Ready driver's state machine: it
applies committed entries to the key-value store and answers whoever waits on
them); ReadIndex and lease reads are answered once the core confirmed them and
the store has applied their index. Membership changes and leadership transfers
run on the leader.

Answers are honest about what is known:
- "ok": the command was applied (its result says how, e.g. a cas mismatch);
- "redirect" / "no_leader" / "failed" / "error": it certainly was not applied and
  will not be (it never reached a log, or another entry won its index);
- "unknown": it reached a leader's log and may still commit. The client retries
  with the same sequence number; the session table applies it at most once;
- "session_expired": a retry whose session the store had forgotten: nothing was
  applied now, and whether the first attempt was is unknown;
- "disk_full": this node cannot write its log; nothing was done (another node may lead).

Under TLS (raftproc.runtime.tls) only client and admin certificates are served
here; a client certificate may ask for status, read and write keys and list the
members; changing membership, transferring leadership and injecting link faults
need an admin one. Link faults (raftproc.runtime.linkfaults) are refused unless the
node's config allows them (`link_faults = true`).
"""

from __future__ import annotations

import heapq
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raftproc.config import NodeAddress
from raftproc.core.messages import Entry
from raftproc.core.node import RaftNode
from raftproc.core.ready import ReadState
from raftproc.core.types import LEADER, NotLeader, TransferInProgress, worth_logging
from raftproc.kv.commands import Command
from raftproc.kv.state_machine import OK, KeyValueStore
from raftproc.runtime import codec
from raftproc.runtime.codec import RemoteProtocolError
from raftproc.runtime.logging import SparseLog
from raftproc.runtime.loop import Connection, EventLoop, Listener, idle
from raftproc.runtime.members import MemberChange, describe
from raftproc.runtime.requests import (
    ClientRequest,
    KvRequest,
    LinkFaultsRequest,
    MemberRequest,
    StatusRequest,
    TransferRequest,
    decode_request,
)
from raftproc.runtime.tls import ADMIN, CLIENT, TlsContexts
from raftproc.server.links import LinkShaper
from raftproc.server.peers import Peers
from raftproc.server.trace import Tracer

Log = Callable[..., None]
MEMBER_CHANGE_TIMEOUT = 60.0  # seconds a `member add` may take (the learner's catch-up included)


@dataclass(slots=True)
class Waiting:
    term: int
    conn: Connection
    request_id: int
    # The command as proposed: the entry at this index and term holds exactly it (Log
    # Matching), so applying it needs no second decode of the bytes just encoded.
    command: Command | None = None


@dataclass(frozen=True, slots=True)
class AskedRead:
    conn: Connection
    request_id: int
    key: str
    scan: tuple[str | None, int] | None = None  # a range read: (after, limit)


class ClientService:
    def __init__(
        self,
        *,
        me: int,
        raft: RaftNode,
        kv: KeyValueStore,
        peers: Peers,
        loop: EventLoop,
        max_frame: int,
        max_buffer: int,
        max_request_bytes: int,
        max_clients: int,
        clock: Callable[[], float],
        log: Log,
        status: Callable[[bool], dict[str, Any]],
        on_applied: Callable[[bytes | None], None],
        tls: TlsContexts | None = None,
        handshake_timeout: float = 5.0,
        tracer: Tracer | None = None,
        link_faults: LinkShaper | None = None,
    ) -> None:
        """`status()`: the node's status answer; `on_applied(command)` hears every applied command (the
        snapshot policy counts bytes); `link_faults` takes an admin's injected faults (None: refused)."""
        self.me = me
        self.raft = raft
        self.kv = kv
        self.peers = peers
        self.loop = loop
        self.max_frame = max_frame
        self.max_buffer = max_buffer
        self.max_request_bytes = max_request_bytes
        self.max_clients = max_clients
        self.refused_clients = 0  # connections closed at once for want of room, since start
        self.proposals_failed = 0  # writes proposed here, then answered failed or unknown
        self.clock = clock
        self.log = log
        self.remote_log = SparseLog(log)  # for what any remote party can repeat at will
        self.status = status
        self.on_applied = on_applied
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.tracer = tracer or Tracer(me, log)
        self.link_faults = link_faults
        self.disk_full = False  # set by the host while a write waits for room (no request reaches the core)
        self.connections: set[Connection] = set()
        self.listener: Listener | None = None
        self.waiting: dict[int, Waiting] = {}  # log index -> the client waiting for it
        # Reads asked of the core (token -> who asked), and confirmed ones waiting
        # for their index to be applied (a heap by index).
        self._read_token = 0
        self._reads_asked: dict[int, AskedRead] = {}
        self._reads_confirmed: list[tuple[int, int, AskedRead]] = []
        self.member_change: MemberChange | None = None
        self._dispatch: dict[type, Callable[[Connection, Any], None]] = {
            StatusRequest: self._status,
            TransferRequest: self._transfer,
            MemberRequest: self._member,
            KvRequest: self._kv,
            LinkFaultsRequest: self._set_link_faults,
        }

    def listen(self, address: tuple[str, int]) -> None:
        self.listener = Listener(self.loop, address, self._accept, log=self.log)

    def close(self) -> None:
        self._fail_waiting("unknown", "node shutting down")
        for conn in list(self.connections):
            conn.close("node shutting down")
        if self.listener is not None:
            self.listener.close()

    # --- requests -----------------------------------------------------------------

    def _accept(self, sock: socket.socket, addr: tuple) -> None:
        if len(self.connections) >= self.max_clients:
            self.refused_clients += 1
            if worth_logging(self.refused_clients):
                self.log(
                    "client_refused",
                    level="warning",
                    reason="max_clients reached",
                    max_clients=self.max_clients,
                    refused=self.refused_clients,
                )
            sock.close()
            return
        conn = Connection(
            self.loop,
            sock,
            name=f"client-{addr[0]}:{addr[1]}",
            on_frame=self._on_frame,
            on_close=self._on_close,
            max_frame=self.max_frame,
            max_buffer=self.max_buffer,
            log=self.remote_log,
            tls=self.tls.server if self.tls else None,
            server_side=True,
            handshake_timeout=self.handshake_timeout,
            on_connected=self._check_role,
        )
        if not conn.closed:
            self.connections.add(conn)

    def _check_role(self, conn: Connection) -> None:
        """After the handshake: a node's certificate (or none we can read) has no
        business on the client port."""
        if conn.identity is None or conn.identity.role not in (CLIENT, ADMIN):
            self.remote_log("client_identity_refused", level="warning", conn=conn.name, identity=str(conn.identity))
            conn.close("not a client certificate")

    def _on_close(self, conn: Connection, reason: str) -> None:
        self.connections.discard(conn)

    def _on_frame(self, conn: Connection, body: bytes) -> None:
        try:
            req: ClientRequest = decode_request(body)
        except RemoteProtocolError as e:
            self.remote_log("frame_error", level="warning", conn=conn.name, error=str(e))
            conn.close("protocol error")
            return
        if len(body) > self.max_request_bytes:
            self._answer(
                conn,
                req.id,
                status="error",
                error=f"request of {len(body)} bytes is over the limit of {self.max_request_bytes} (max_request_bytes)",
            )
            return
        if self.tls is not None and _needs_admin(req) and (conn.identity is None or conn.identity.role != ADMIN):
            self.remote_log("permission_denied", level="warning", conn=conn.name, identity=str(conn.identity), request=type(req).__name__)
            self._answer(
                conn,
                req.id,
                status="error",
                error=f"permission denied: {_describe(req)} needs an admin certificate (this connection presented {conn.identity})",
            )
            return
        if self.disk_full and not isinstance(req, StatusRequest):
            self._answer(conn, req.id, status="disk_full", error=f"node {self.me} cannot write its log: its disk is full; ask another node")
            return
        self._dispatch[type(req)](conn, req)

    def close_idle(self, idle_seconds: float, first_frame_seconds: float) -> None:
        """Connections that completed no frame for `idle_seconds`, or none at all
        within `first_frame_seconds`, are closed (a connection that sends a byte and
        then nothing must not hold a slot)."""
        for conn in idle(self.connections, self.clock(), idle_seconds, first_frame_seconds):
            self.remote_log("connection_idle_closed", level="info", conn=conn.name)
            conn.close("idle")

    def _status(self, conn: Connection, req: StatusRequest) -> None:
        self._answer(conn, req.id, status="ok", result=self.status(req.state))

    def _kv(self, conn: Connection, req: KvRequest) -> None:
        raft = self.raft
        if raft.role != LEADER:
            self._redirect(conn, req.id)
            return
        if not req.through_log:
            self._read(conn, req)
            return
        cmd = Command(req.op, req.key, req.value, req.expect, req.client, req.seq, req.retry, req.trace)
        try:
            index, term = raft.propose(cmd.encode())
        except NotLeader:
            self._redirect(conn, req.id)
            return
        except TransferInProgress as e:
            # Never reached the log: the client retries and finds the new leader.
            self._answer(conn, req.id, status="no_leader", error=str(e))
            return
        self.waiting[index] = Waiting(term, conn, req.id, cmd)
        if req.trace:
            self.tracer.proposed(index, term, cmd)

    def _read(self, conn: Connection, req: KvRequest) -> None:
        """A linearizable read without a log entry (ReadIndex or lease, in the core)."""
        self._read_token += 1
        token = self._read_token
        try:
            self.raft.read_index(token, lease=req.read == "lease")
        except NotLeader:
            self._redirect(conn, req.id)
            return
        self._reads_asked[token] = AskedRead(conn, req.id, req.key, (req.after, req.limit) if req.op == "scan" else None)

    def _transfer(self, conn: Connection, req: TransferRequest) -> None:
        """Start handing leadership over; the client watches for the new leader."""
        raft = self.raft
        if raft.role != LEADER:
            self._redirect(conn, req.id)
            return
        target = req.target
        if target == self.me:
            self._answer(conn, req.id, status="ok", result={"target": self.me, "already": True})
            return
        if target is None:  # the voter with the longest log, among those connected
            voters = [p for p in raft.membership.voters if p != self.me and not raft.progress[p].diverged]
            live = [p for p in voters if self.peers.is_connected(p)] or voters
            target = max(live, key=lambda p: raft.progress[p].match_index) if live else None
        try:
            if target is None:
                raise ValueError("a single-node cluster has nobody to hand leadership to")
            raft.transfer_leadership(target)
        except ValueError as e:
            self._answer(conn, req.id, status="error", error=str(e))
            return
        self._answer(conn, req.id, status="ok", result={"target": target})

    def _set_link_faults(self, conn: Connection, req: LinkFaultsRequest) -> None:
        if self.link_faults is None:
            self._answer(
                conn,
                req.id,
                status="error",
                error=f"node {self.me} does not take injected link faults (its config lacks link_faults = true)",
            )
            return
        self.link_faults.set(req.faults)
        self.log("link_faults_set", **req.faults.to_wire())
        self._answer(conn, req.id, status="ok", result=req.faults.to_wire())

    def _member(self, conn: Connection, req: MemberRequest) -> None:
        """`member list | add | remove` (raftproc.runtime.members), on the leader."""
        raft = self.raft
        if raft.role != LEADER:
            self._redirect(conn, req.id)
            return
        if req.op == "list":
            self._answer(conn, req.id, status="ok", result=self._member_list())
            return
        if self.member_change is not None:
            self._answer(conn, req.id, status="error", error=f"node {self.me} is already running a membership change")
            return
        node = req.node
        if req.op == "remove" and node not in raft.membership.members:
            m = raft.membership
            self._answer(
                conn,
                req.id,
                status="error",
                error=(
                    f"node {node} is not a member (voters {sorted(m.voters)}, learners {sorted(m.learners)}); "
                    "if an earlier remove of it answered unknown, that remove has finished"
                ),
            )
            return
        if req.op == "add":
            assert req.addresses is not None
            peer, client = req.addresses
            known = self.peers.book.get(node)
            if node in raft.membership.members and known is not None and (known.peer, known.client) != (peer, client):
                self._answer(
                    conn, req.id, status="error", error=f"node {node} is a member at another address (peer {known.peer[0]}:{known.peer[1]})"
                )
                return
            if node not in raft.membership.members:
                self.peers.book[node] = NodeAddress(node, peer, client, join=True)
        request_id = req.id
        self.member_change = MemberChange(
            req.op,
            node,
            self.clock() + MEMBER_CHANGE_TIMEOUT,
            answer=lambda **fields: self._answer(conn, request_id, **fields),
        )
        self.log("member_change_started", op=req.op, peer_id=node)

    def _member_list(self) -> dict[str, Any]:
        raft = self.raft
        nodes = {}
        for node in raft.membership.members:
            a = self.peers.book.get(node)
            pr = raft.progress.get(node)
            nodes[node] = {
                "role": "voter" if raft.membership.is_voter(node) else "learner",
                "peer": f"{a.peer[0]}:{a.peer[1]}" if a else None,
                "client": f"{a.client[0]}:{a.client[1]}" if a else None,
                "match_index": raft.log.last_index if node == self.me else (pr.match_index if pr else 0),
            }
        return {
            "leader": self.me,
            "term": raft.current_term,
            "last_index": raft.log.last_index,
            **describe(raft.membership),
            "nodes": nodes,
        }

    # --- the Ready driver's state machine ----------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self._apply(entry)

    def _apply(self, entry: Entry) -> None:
        if entry.membership is not None:
            # The configuration took effect when it was appended; to the store it is a no-op.
            self.kv.apply(entry.index, None)
            self.log("config_applied", index=entry.index, membership=entry.membership.describe())
            self.kv.forget_incarnations(entry.membership.members)
            self.peers.forget_removed(entry.membership.members)
            return
        waiting = self.waiting.pop(entry.index, None)
        proposed = waiting.command if waiting is not None and waiting.term == entry.term else None
        result = self.kv.apply(entry.index, entry.command, proposed)
        self.tracer.applied(entry)
        self.on_applied(entry.command)
        if waiting is None:
            return
        if waiting.term == entry.term and result is not None and result.get("session_expired"):
            self._answer(waiting.conn, waiting.request_id, status="session_expired", error=result["error"])
        elif waiting.term == entry.term:
            if result is OK:
                waiting.conn.send(codec.encode_ok_answer(waiting.request_id))
            else:
                self._answer(waiting.conn, waiting.request_id, status="ok", result=result)
        else:
            # Another leader's entry holds this index: ours is gone for good.
            self.proposals_failed += 1
            self._answer(waiting.conn, waiting.request_id, status="failed", error="overwritten by a newer leader")

    def serve_reads(self, read_states: Sequence[ReadState]) -> None:
        """Confirmed reads wait until the store has applied their index."""
        for rs in read_states:
            asked = self._reads_asked.pop(rs.request, None)
            if asked is not None:
                heapq.heappush(self._reads_confirmed, (rs.index, rs.request, asked))
        confirmed, applied = self._reads_confirmed, self.kv.last_applied
        while confirmed and confirmed[0][0] <= applied:
            _, _, asked = heapq.heappop(confirmed)
            if asked.scan is not None:
                result = self.kv.scan(asked.key, *asked.scan)
            else:
                result = {"ok": True, "value": self.kv.data.get(asked.key)}
            self._answer(asked.conn, asked.request_id, status="ok", result=result)

    # --- between passes -------------------------------------------------------------

    def poll_member_change(self) -> None:
        change = self.member_change
        if change is not None and change.poll(self.raft, self.clock(), self._addresses_with):
            self.member_change = None

    def _context_with(self, extra: int | None = None) -> bytes:
        members = set(self.raft.membership.members) | ({extra} if extra else set())
        return self.peers.address_book(members)

    def settle_leadership(self) -> None:
        """After a Ready: a node that no longer leads tells every waiting client."""
        if self.raft.role == LEADER:
            return
        if self.waiting:
            self._fail_waiting("unknown", "leadership lost before commit")
        if self._reads_asked:
            # Reads the core had not confirmed died with the leadership; a read
            # changes nothing, so the client may simply ask the new leader.
            asked, self._reads_asked = self._reads_asked, {}
            for read in asked.values():
                self._redirect(read.conn, read.request_id)

    def _fail_waiting(self, status: str, why: str) -> None:
        waiting, self.waiting = self.waiting, {}
        self.proposals_failed += len(waiting)
        for w in waiting.values():
            self._answer(w.conn, w.request_id, status=status, error=why)

    # --- answers --------------------------------------------------------------------

    def _redirect(self, conn: Connection, request_id: int) -> None:
        leader = self.raft.leader_id
        address = self.peers.book.get(leader) if leader is not None and leader != self.me else None
        if address is None:
            self._answer(conn, request_id, status="no_leader")
            return
        host, port = address.client
        self.log("client_redirected", level="debug", leader=leader)
        self._answer(conn, request_id, status="redirect", leader=leader, leader_addr=f"{host}:{port}")

    def _answer(self, conn: Connection, request_id: int, **fields: Any) -> None:
        conn.send(codec.encode({"t": "resp", "id": request_id, **fields}))


def _needs_admin(req: ClientRequest) -> bool:
    return isinstance(req, (TransferRequest, LinkFaultsRequest)) or (isinstance(req, MemberRequest) and req.op != "list")


def _describe(req: ClientRequest) -> str:
    if isinstance(req, TransferRequest):
        return "transfer"
    if isinstance(req, MemberRequest):
        return f"member {req.op}"
    return "injecting link faults" if isinstance(req, LinkFaultsRequest) else "this request"
