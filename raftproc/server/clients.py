"""The client service: requests from clients in, answers out.

Each frame is decoded into one typed request (raftproc.runtime.protocol) and
dispatched by its type. Writes and log reads are proposed to the core and wait in
the applier (raftproc.server.applier) until their entry is applied; ReadIndex and
lease reads wait there until the core confirmed them and the store has applied
their index. Membership changes (raftproc.server.members) and leadership
transfers run on the leader.

Answers are honest about what is known:
- "ok": the command was applied (its result says how, e.g. a cas mismatch);
- "redirect" / "no_leader" / "failed" / "error": it certainly was not applied and
  will not be (it never reached a log, or another entry won its index);
- "unknown": it reached a leader's log and may still commit. The client retries
  with the same sequence number; the session table applies it at most once;
- "session_expired": a retry whose session the store had forgotten: nothing was
  applied now, and whether the first attempt was is unknown;
- "disk_full": this node cannot write its log; nothing was done (another node may lead).

Redis commands arrive here too (`redis` requests): from this node's own RESP port
when it leads, through a LocalAsker, and forwarded by the other nodes' RESP ports
(raftproc.server.redis). Writes and MULTI blocks are one log entry each; reads go
through ReadIndex like a `get`.

Under TLS (raftproc.runtime.tls) client and admin certificates are served here, and
node certificates for forwarded Redis commands only; a client certificate may ask
for status, read and write keys and list the members; changing membership, transferring leadership and injecting link faults
need an admin one. Link faults (raftproc.runtime.linkfaults) are refused unless the
node's config allows them (`link_faults = true`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, NotLeader, TransferInProgress, worth_logging
from raftproc.kv import redis
from raftproc.kv.commands import Command
from raftproc.runtime.codec import RemoteProtocolError
from raftproc.runtime.loop import Connection, ConnectionSettings, EventLoop, Listener, idle
from raftproc.runtime.protocol import (
    ClientRequest,
    KvRequest,
    LinkFaultsRequest,
    MemberRequest,
    Outcome,
    RedisRequest,
    StatusRequest,
    TransferRequest,
    decode_request,
)
from raftproc.runtime.tls import ADMIN, CLIENT, NODE
from raftproc.server.applier import Applier, AskedRead, Waiting
from raftproc.server.disk import DiskFreeze
from raftproc.server.links import LinkShaper
from raftproc.server.members import MemberService
from raftproc.server.peers import Peers
from raftproc.server.replies import Asker, Replies
from raftproc.server.trace import Tracer

Log = Callable[..., None]


@dataclass(frozen=True, slots=True)
class ClientLimits:
    max_request_bytes: int  # bytes of one request's body
    max_clients: int  # connections at once


class ClientService:
    def __init__(
        self,
        *,
        me: int,
        raft: RaftNode,
        loop: EventLoop,
        limits: ClientLimits,
        connections: ConnectionSettings,
        applier: Applier,
        members: MemberService,
        replies: Replies,
        peers: Peers,
        disk: DiskFreeze,
        status: Callable[[bool], dict[str, Any]],
        tracer: Tracer,
        log: Log,
        link_faults: LinkShaper | None = None,
    ) -> None:
        """`status(state)`: the node's status answer; `link_faults` takes an admin's
        injected faults (None: refused)."""
        self.me = me
        self.raft = raft
        self.loop = loop
        self.limits = limits
        self.applier = applier
        self.members = members
        self.replies = replies
        self.peers = peers
        self.disk = disk
        self.status = status
        self.tracer = tracer
        self.log = log
        self.remote_log = connections.log  # for what any remote party can repeat at will
        self.settings = connections
        self.tls = connections.tls
        self.link_faults = link_faults
        self.refused_clients = 0  # connections closed at once for want of room, since start
        self.connections: set[Connection] = set()
        self.listener: Listener | None = None
        self._read_token = 0
        self._dispatch: dict[type, Callable[[Asker, Any], None]] = {
            StatusRequest: self._status,
            TransferRequest: self._transfer,
            MemberRequest: members.handle,
            KvRequest: self._kv,
            LinkFaultsRequest: self._set_link_faults,
            RedisRequest: self._redis,
        }

    def listen(self, address: tuple[str, int]) -> None:
        self.listener = Listener(self.loop, address, self._accept, log=self.log)

    def close(self) -> None:
        self.applier.fail_waiting(Outcome.UNKNOWN, "node shutting down")
        for conn in list(self.connections):
            conn.close("node shutting down")
        if self.listener is not None:
            self.listener.close()

    # --- requests -----------------------------------------------------------------

    def _accept(self, sock: socket.socket, addr: tuple) -> None:
        limits = self.limits
        if len(self.connections) >= limits.max_clients:
            self.refused_clients += 1
            if worth_logging(self.refused_clients):
                self.log(
                    "client_refused",
                    level="warning",
                    reason="max_clients reached",
                    max_clients=limits.max_clients,
                    refused=self.refused_clients,
                )
            sock.close()
            return
        conn = self.settings.open(
            self.loop,
            sock,
            name=f"client-{addr[0]}:{addr[1]}",
            on_frame=self._on_frame,
            on_close=self._on_close,
            on_connected=self._check_role,
        )
        if not conn.closed:
            self.connections.add(conn)

    def _check_role(self, conn: Connection) -> None:
        """After the handshake: a certificate we cannot read has no business on the
        client port (a node's may forward Redis commands, see _on_frame)."""
        if conn.identity is None or conn.identity.role not in (CLIENT, ADMIN, NODE):
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
        # A forwarded Redis command is checked by its arguments (in _redis), not by
        # its envelope, so what one node takes every node takes.
        if len(body) > self.limits.max_request_bytes + (REDIS_ENVELOPE_BYTES if isinstance(req, RedisRequest) else 0):
            self.replies.answer(
                conn,
                req.id,
                status=Outcome.ERROR,
                error=f"request of {len(body)} bytes is over the limit of {self.limits.max_request_bytes} (max_request_bytes)",
            )
            return
        if self.tls is not None and conn.identity is not None and conn.identity.role == NODE and not isinstance(req, RedisRequest):
            # Another node's certificate is here only to forward Redis commands.
            self.remote_log(
                "client_identity_refused", level="warning", conn=conn.name, identity=str(conn.identity), request=type(req).__name__
            )
            conn.close("a node certificate only forwards Redis commands")
            return
        if self.tls is not None and _needs_admin(req) and (conn.identity is None or conn.identity.role != ADMIN):
            self.remote_log("permission_denied", level="warning", conn=conn.name, identity=str(conn.identity), request=type(req).__name__)
            self.replies.answer(
                conn,
                req.id,
                status=Outcome.ERROR,
                error=f"permission denied: {_describe(req)} needs an admin certificate (this connection presented {conn.identity})",
            )
            return
        self.handle(conn, req)

    def handle(self, conn: Asker, req: ClientRequest) -> None:
        """A checked request, from a connection or from inside this process."""
        if self.disk.frozen and not isinstance(req, StatusRequest):
            self.replies.answer(
                conn, req.id, status=Outcome.DISK_FULL, error=f"node {self.me} cannot write its log: its disk is full; ask another node"
            )
            return
        self._dispatch[type(req)](conn, req)

    def close_idle(self, idle_seconds: float, first_frame_seconds: float) -> None:
        """Connections that completed no frame for `idle_seconds`, or none at all
        within `first_frame_seconds`, are closed (a connection that sends a byte and
        then nothing must not hold a slot)."""
        for conn in idle(self.connections, self.loop.clock(), idle_seconds, first_frame_seconds):
            self.remote_log("connection_idle_closed", level="info", conn=conn.name)
            conn.close("idle")

    def _status(self, conn: Asker, req: StatusRequest) -> None:
        answer = {**self.status(req.state), "client_connections": len(self.connections), "clients_refused": self.refused_clients}
        self.replies.answer(conn, req.id, status=Outcome.OK, result=answer)

    def _kv(self, conn: Asker, req: KvRequest) -> None:
        raft = self.raft
        if raft.role != LEADER:
            self.replies.redirect(conn, req.id)
            return
        if not req.through_log:
            self._read(conn, req)
            return
        cmd = Command(req.op, req.key, req.value, req.expect, req.client, req.seq, req.retry, req.trace)
        self._propose(conn, req.id, cmd)

    def _propose(self, conn: Asker, request_id: int, cmd: Command) -> None:
        try:
            index, term = self.raft.propose(cmd.encode())
        except NotLeader:
            self.replies.redirect(conn, request_id)
            return
        except TransferInProgress as e:
            # Never reached the log: the client retries and finds the new leader.
            self.replies.answer(conn, request_id, status=Outcome.NO_LEADER, error=str(e))
            return
        self.applier.wait_for(index, Waiting(term, conn, request_id, cmd))
        if cmd.trace:
            self.tracer.proposed(index, term, cmd)

    def _read(self, conn: Asker, req: KvRequest) -> None:
        """A linearizable read without a log entry (ReadIndex or lease, in the core)."""
        self._ask_read(
            conn, req.id, AskedRead(conn, req.id, req.key, (req.after, req.limit) if req.op == "scan" else None), lease=req.read == "lease"
        )

    def _ask_read(self, conn: Asker, request_id: int, asked: AskedRead, lease: bool = False) -> None:
        self._read_token += 1
        token = self._read_token
        try:
            self.raft.read_index(token, lease=lease)
        except NotLeader:
            self.replies.redirect(conn, request_id)
            return
        self.applier.reads_asked[token] = asked

    def _redis(self, conn: Asker, req: RedisRequest) -> None:
        """One Redis command or a MULTI block. A block, and any write, is one log
        entry; a lone read is a ReadIndex read; a command the table refuses is
        answered with its error at once (the node that took it checked it too)."""
        if self.raft.role != LEADER:
            self.replies.redirect(conn, req.id)
            return
        size, limit = redis.request_size(req.commands), self.limits.max_request_bytes
        if size > limit:
            too_large = redis.error(f"ERR a request of {size} bytes is over the limit of {limit} (max_request_bytes)")
            self.replies.answer(conn, req.id, status=Outcome.OK, result={"ok": True, "redis": [too_large] * len(req.commands)})
            return
        spec = None if req.multi else redis.check(req.commands[0])
        if isinstance(spec, dict):
            self.replies.answer(conn, req.id, status=Outcome.OK, result={"ok": True, "redis": [spec]})
        elif spec is not None and spec.kind == redis.READ:
            self._ask_read(conn, req.id, AskedRead(conn, req.id, "", redis=req.commands[0]))
        else:
            self._propose(conn, req.id, Command("redis", "", cbor2.dumps(req.commands)))

    def _transfer(self, conn: Asker, req: TransferRequest) -> None:
        """Start handing leadership over; the client watches for the new leader."""
        raft = self.raft
        if raft.role != LEADER:
            self.replies.redirect(conn, req.id)
            return
        target = req.target
        if target == self.me:
            self.replies.answer(conn, req.id, status=Outcome.OK, result={"target": self.me, "already": True})
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
            self.replies.answer(conn, req.id, status=Outcome.ERROR, error=str(e))
            return
        self.replies.answer(conn, req.id, status=Outcome.OK, result={"target": target})

    def _set_link_faults(self, conn: Asker, req: LinkFaultsRequest) -> None:
        if self.link_faults is None:
            self.replies.answer(
                conn,
                req.id,
                status=Outcome.ERROR,
                error=f"node {self.me} does not take injected link faults (its config lacks link_faults = true)",
            )
            return
        self.link_faults.set(req.faults)
        self.log("link_faults_set", **req.faults.to_wire())
        self.replies.answer(conn, req.id, status=Outcome.OK, result=req.faults.to_wire())


REDIS_ENVELOPE_BYTES = 64 * 1024  # a forwarded request's CBOR beyond its arguments' counted size


def _needs_admin(req: ClientRequest) -> bool:
    return isinstance(req, (TransferRequest, LinkFaultsRequest)) or (isinstance(req, MemberRequest) and req.op != "list")


def _describe(req: ClientRequest) -> str:
    if isinstance(req, TransferRequest):
        return "transfer"
    if isinstance(req, MemberRequest):
        return f"member {req.op}"
    return "injecting link faults" if isinstance(req, LinkFaultsRequest) else "this request"
