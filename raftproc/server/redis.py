"""The RESP port: any Redis client talks to the cluster through any node.

Each connection is a RespSession: the commands it sent, answered strictly in the
order sent (pipelining), whatever order the answers come back in. Commands of three
kinds arrive:
- this connection's own business, answered here at once: PING, ECHO, HELLO,
  SELECT 0, CLIENT, COMMAND, CONFIG GET, INFO, QUIT, RESET, MULTI/EXEC/DISCARD's
  queueing (raftproc.server.resp_local);
- the data commands of raftproc.kv.redis, checked here first (an unknown command or
  a syntax error is answered at once, as Redis does), then run by the leader: on
  the leader itself through the client service (raftproc.server.clients), from a
  follower forwarded to it (raftproc.server.forward), or, with `redis_forward =
  false`, refused with `-MOVED 0 host:port` naming the leader's RESP port;
- EXEC: the queued block, run by the leader as one log entry.

Errors say what is known. `-CLUSTERDOWN`: no leader, nothing done. `-TRYAGAIN`: not
applied (a newer leader overwrote it, or it was never sent). `-MISCONF`: the node
cannot write its log (disk full), nothing done. `-UNKNOWN`: a write that may or may
not have been applied; it is never reported as a failure. Nothing is retried
blindly: only an answer that says the command was not run (a redirect from a node
that stopped leading) sends it again, at most MAX_REDIRECTS times.

Limits are the client port's: request bytes, connections, idle and handshake
timeouts, TLS with client or admin certificates. A connection with MAX_PIPELINE
commands unanswered is not read until answers drain, so a client pipelining a
million commands is slowed by TCP, not held in memory.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, worth_logging
from raftproc.kv import redis
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime.addresses import Address
from raftproc.runtime.framing import FrameError
from raftproc.runtime.loop import Connection, ConnectionSettings, EventLoop, Listener, idle
from raftproc.runtime.protocol import Answer, Outcome, RedisRequest
from raftproc.runtime.resp import RequestParser, encode_reply
from raftproc.runtime.tls import ADMIN, CLIENT
from raftproc.server.clients import ClientService
from raftproc.server.forward import Forwarder
from raftproc.server.peers import Peers
from raftproc.server.replies import LocalAsker
from raftproc.server.resp_local import LOCAL_COMMANDS, PENDING, LocalContext, NodeFacts, RespSession, Slot

Log = Callable[..., None]
MAX_PIPELINE = 1024  # unanswered commands per connection before it is read no more
MAX_REDIRECTS = 3
MAX_ARGS = 1_000_000
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class RedisLimits:
    max_request_bytes: int
    max_clients: int
    forward: bool  # a follower forwards; else it answers -MOVED


class RedisService:
    def __init__(
        self,
        *,
        me: int,
        raft: RaftNode,
        kv: KeyValueStore,
        loop: EventLoop,
        limits: RedisLimits,
        connections: ConnectionSettings,
        clients: ClientService,
        forwarder: Forwarder,
        peers: Peers,
        log: Log,
    ) -> None:
        self.me, self.raft, self.kv, self.loop = me, raft, kv, loop
        self.limits = limits
        self.settings = connections
        self.remote_log = connections.log
        self.clients = clients
        self.forwarder = forwarder
        self.peers = peers
        self.log = log
        self.local = LocalAsker()
        self.sessions: dict[Connection, RespSession] = {}
        self.facts = NodeFacts(me, raft, kv, peers, loop.clock, self.sessions, limits.max_clients)
        self.refused_clients = 0
        self.listener: Listener | None = None
        self.address: Address | None = None
        self._next_client_id = 0

    def listen(self, address: Address) -> None:
        self.listener = Listener(self.loop, address, self._accept, log=self.log)
        self.address = self.facts.address = address

    def close(self) -> None:
        for conn in list(self.sessions):
            conn.close("node shutting down")
        self.forwarder.close()
        if self.listener is not None:
            self.listener.close()

    def close_idle(self, idle_seconds: float, first_frame_seconds: float) -> None:
        for conn in idle(self.sessions, self.loop.clock(), idle_seconds, first_frame_seconds):
            if not self.sessions[conn].slots:  # still owed answers: not idle, waiting on us
                self.remote_log("connection_idle_closed", level="info", conn=conn.name)
                conn.close("idle")

    # --- connections ------------------------------------------------------------------

    def _accept(self, sock: socket.socket, addr: tuple) -> None:
        if len(self.sessions) >= self.limits.max_clients:
            self.refused_clients += 1
            if worth_logging(self.refused_clients):
                self.log("redis_client_refused", level="warning", reason="max_clients reached", refused=self.refused_clients)
            sock.close()
            return
        conn = self.settings.open(
            self.loop,
            sock,
            name=f"redis-{addr[0]}:{addr[1]}",
            on_frame=self._on_command,
            on_close=self._on_close,
            on_connected=self._check_role,
            decoder=RequestParser(self.limits.max_request_bytes, MAX_ARGS),
            on_protocol_error=self._on_protocol_error,
        )
        if not conn.closed:
            self._next_client_id += 1
            self.sessions[conn] = RespSession(conn, self._next_client_id, self.loop.clock())

    def _check_role(self, conn: Connection) -> None:
        if self.settings.tls is not None and (conn.identity is None or conn.identity.role not in (CLIENT, ADMIN)):
            self.remote_log("client_identity_refused", level="warning", conn=conn.name, identity=str(conn.identity))
            conn.close("not a client certificate")

    def _on_close(self, conn: Connection, reason: str) -> None:
        self.sessions.pop(conn, None)

    def _on_protocol_error(self, conn: Connection, e: FrameError) -> None:
        """Redis answers a protocol error, then closes."""
        conn.write(encode_reply(redis.error(f"ERR {e}"[:MAX_ERROR_CHARS])))
        conn.flush()

    # --- commands, in order -----------------------------------------------------------

    def _on_command(self, conn: Connection, argv: list[bytes]) -> None:
        session = self.sessions.get(conn)
        if session is None:
            return
        session.inbox.append(argv)
        self._take(session)

    def _take(self, session: RespSession) -> None:
        """Run what was read, while the pipeline has room; stop reading when it has none."""
        session.taking = True
        try:
            while session.inbox and len(session.slots) < MAX_PIPELINE and not session.quitting:
                self._run(session, session.inbox.popleft())
        finally:
            session.taking = False
        if session.inbox and not session.quitting:
            session.conn.pause()
        else:
            session.conn.resume()

    def _run(self, session: RespSession, argv: list[bytes]) -> None:
        slot = Slot()
        session.slots.append(slot)
        name = argv[0].lower()
        local = LOCAL_COMMANDS.get(name)
        if session.multi is not None and name not in (b"exec", b"discard", b"multi", b"quit", b"reset"):
            self._fill(session, slot, self._queue(session, argv))
        elif name == b"exec":
            self._exec(session, slot)
        elif local is not None:
            self._fill(session, slot, local(LocalContext(self.facts, session), argv))
        else:
            spec = redis.check(argv)
            if isinstance(spec, dict):
                self._fill(session, slot, spec)
            else:
                self._submit(session, slot, [argv], multi=False, write=spec.kind == redis.WRITE)

    def _queue(self, session: RespSession, argv: list[bytes]) -> Any:
        assert session.multi is not None
        spec = redis.check(argv)
        if isinstance(spec, dict) or len(session.multi) >= RESP_MAX_QUEUED:
            session.multi_failed = True
            return spec if isinstance(spec, dict) else redis.error(f"ERR a MULTI block holds at most {RESP_MAX_QUEUED} commands")
        session.multi.append(argv)
        return redis.status("QUEUED")

    def _exec(self, session: RespSession, slot: Slot) -> None:
        queued, failed = session.multi, session.multi_failed
        session.multi, session.multi_failed = None, False
        if queued is None:
            self._fill(session, slot, redis.error("ERR EXEC without MULTI"))
        elif failed:
            self._fill(session, slot, redis.error("EXECABORT Transaction discarded because of previous errors."))
        elif not queued:
            self._fill(session, slot, [])
        else:
            self._submit(session, slot, queued, multi=True, write=True)

    def _submit(self, session: RespSession, slot: Slot, commands: list[list[bytes]], *, multi: bool, write: bool, tries: int = 0) -> None:
        """To the leader: this node, another through the forwarder, or a -MOVED."""
        raft = self.raft

        def on_answer(answer: Answer) -> None:
            if answer.status is Outcome.REDIRECT and tries < MAX_REDIRECTS:
                self._submit(session, slot, commands, multi=multi, write=write, tries=tries + 1)
            else:
                self._fill(session, slot, _reply(answer, multi))

        if raft.role == LEADER:
            self.clients.handle(self.local, RedisRequest(id=self.local.ask(on_answer), commands=commands, multi=multi))
            return
        leader = raft.leader_id
        book = self.peers.book.get(leader) if leader is not None else None
        if leader is None or book is None:
            self._fill(session, slot, redis.error("CLUSTERDOWN no leader: no command was run; try again shortly"))
        elif not self.limits.forward:
            self._fill(session, slot, _moved(leader, book.redis))
        else:
            self.forwarder.send(leader, book.client, commands, multi=multi, write=write, on_answer=on_answer)

    def _fill(self, session: RespSession, slot: Slot, reply: Any) -> None:
        """Answer one command; send every answer now due, in order."""
        slot.reply = reply
        conn, slots = session.conn, session.slots
        if conn.closed:
            return
        while slots and slots[0].reply is not PENDING:
            if not conn.write(encode_reply(slots.popleft().reply, session.resp3)):
                self.remote_log("redis_output_full", level="warning", conn=conn.name)
                conn.close("output buffer full")
                return
        if session.quitting and not slots:
            conn.flush()
            conn.close("client quit")
        elif session.inbox and not session.taking:
            self._take(session)


RESP_MAX_QUEUED = 10_000  # raftproc.runtime.protocol.MAX_REDIS_COMMANDS: a block travels as one request


def _moved(leader: int, address: Address | None) -> Any:
    if address is None:
        return redis.error(f"CLUSTERDOWN the leader (node {leader}) has no RESP port in this node's config")
    return redis.error(f"MOVED 0 {address[0]}:{address[1]}")


def _reply(answer: Answer, multi: bool) -> Any:
    """What the client hears for the leader's answer."""
    status, why = answer.status, (answer.error or "")[:MAX_ERROR_CHARS]
    if status is Outcome.OK:
        result = answer.result
        if isinstance(result, dict) and isinstance(result.get("redis"), list):
            replies = result["redis"]
            return replies if multi else replies[0]
        return redis.error(f"ERR {str(result.get('error') if isinstance(result, dict) else result)[:MAX_ERROR_CHARS]}")
    if status is Outcome.UNKNOWN:
        return redis.error(f"UNKNOWN outcome unknown: {why}; the command may or may not have been applied")
    if status in (Outcome.NO_LEADER, Outcome.REDIRECT):
        return redis.error(f"CLUSTERDOWN no leader: {why or 'leadership is changing'}; the command was not run")
    if status is Outcome.FAILED:
        return redis.error(f"TRYAGAIN {why}; the command was not applied")
    if status is Outcome.DISK_FULL:
        return redis.error(f"MISCONF {why}; nothing was done")
    return redis.error(f"ERR {why}")
