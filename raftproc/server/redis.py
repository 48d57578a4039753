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
from raftproc.runtime.loop import Connection, ConnectionSettings, EventLoop, Listener, describe_error, idle
from raftproc.runtime.protocol import MAX_REDIS_COMMANDS, Answer, Outcome, RedisRequest
from raftproc.runtime.resp import RequestParser, RespError, encode_reply
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
        """Each second: idle connections closed, and the forwarder's connections looked after."""
        self.forwarder.sweep(idle_seconds)
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

    def _guarded(self, session: RespSession, work: Callable[[], None]) -> None:
        """Run `work` for `session` from a timer or an answer: a fault in it costs this
        connection, never the loop (a timer's exception would end the process)."""
        try:
            work()
        except Exception as e:
            self.log("redis_session_failed", level="error", conn=session.conn.name, error=describe_error(e))
            session.conn.close("internal error")

    # --- commands, in order -----------------------------------------------------------

    def _on_command(self, conn: Connection, item: list[bytes] | RespError) -> None:
        session = self.sessions.get(conn)
        if session is None:
            return
        session.inbox.append(item)
        self._take(session)

    def _take(self, session: RespSession) -> None:
        """Run what was read, in order, while the pipeline has room and the next
        command may start; read no more while anything read waits."""
        inbox, conn = session.inbox, session.conn
        session.taking = True
        try:
            while inbox and len(session.slots) < MAX_PIPELINE and not session.quitting and not conn.closed:
                spec = self._data_command(session, inbox[0])
                if not self._may_start(session, inbox[0], spec):
                    break
                self._run(session, inbox.popleft(), spec)
        finally:
            session.taking = False
        if conn.closed:
            return
        if inbox or session.quitting:
            conn.pause()
        else:
            conn.resume()

    def _data_command(self, session: RespSession, item: list[bytes] | RespError) -> redis.Spec | dict[str, str] | None:
        """A command for the store, checked (its Spec, or the error it earns); None for
        what is answered or queued here. Checked once, here, for both uses below."""
        if isinstance(item, RespError):
            return None
        name = item[0].lower()
        if (session.multi is not None and name not in TRANSACTION_CONTROL) or name in LOCAL_COMMANDS or name == b"exec":
            return None
        return redis.check(item)

    def _may_start(self, session: RespSession, item: list[bytes] | RespError, spec: redis.Spec | dict[str, str] | None) -> bool:
        """Whether a command may start while others of its connection are in flight.

        Redis runs a connection's commands in the order sent. Here a read is served
        by ReadIndex, whenever the leader confirms it, and a write when its entry
        applies: a read in flight with a write could see the write's effect, or not,
        whatever their order. So only commands of one kind (reads, or writes) to one
        leader are in flight at once; writes to one leader keep their order in its log."""
        if session.in_flight == 0 or isinstance(item, RespError) or isinstance(spec, dict):
            return True
        if spec is None:
            if item[0].lower() != b"exec" or session.multi is None:
                return True  # queued or answered here: nothing runs against the store
            kind = redis.WRITE
        else:
            kind = spec.kind
        return (kind, self._leader()) == (session.in_flight_kind, session.in_flight_to)

    def _leader(self) -> int | None:
        return self.me if self.raft.role == LEADER else self.raft.leader_id

    def _run(self, session: RespSession, item: list[bytes] | RespError, spec: redis.Spec | dict[str, str] | None) -> None:
        slot = Slot()
        session.slots.append(slot)
        if isinstance(item, RespError):
            # Redis answers a protocol error after what came before it, then closes.
            session.quitting = True
            self._fill(session, slot, redis.error(f"ERR {item}"[:MAX_ERROR_CHARS]))
            return
        name = item[0].lower()
        local = LOCAL_COMMANDS.get(name)
        if session.multi is not None and name not in TRANSACTION_CONTROL:
            self._fill(session, slot, self._queue(session, item))
        elif name == b"exec":
            self._exec(session, slot)
        elif local is not None:
            self._fill(session, slot, local(LocalContext(self.facts, session), item))
        elif isinstance(spec, dict):
            self._fill(session, slot, spec)
        elif spec is not None:
            self._start(session, slot, [item], multi=False, write=spec.kind == redis.WRITE)
        else:
            self._fill(session, slot, redis.unknown_command(item))

    def _queue(self, session: RespSession, argv: list[bytes]) -> Any:
        assert session.multi is not None
        spec = redis.check(argv)
        session.multi_bytes += redis.request_size([argv])
        if isinstance(spec, dict):
            session.multi_failed = True
            return spec
        if len(session.multi) >= MAX_REDIS_COMMANDS or session.multi_bytes > self.limits.max_request_bytes:
            session.multi_failed = True
            return redis.error(
                f"ERR a MULTI block holds at most {MAX_REDIS_COMMANDS} commands of {self.limits.max_request_bytes} bytes (max_request_bytes)"
            )
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
            self._start(session, slot, queued, multi=True, write=True)

    def _start(self, session: RespSession, slot: Slot, commands: list[list[bytes]], *, multi: bool, write: bool) -> None:
        session.in_flight += 1
        session.in_flight_kind = redis.WRITE if write else redis.READ
        self._submit(session, slot, commands, multi=multi, write=write, tries=0)

    def _submit(self, session: RespSession, slot: Slot, commands: list[list[bytes]], *, multi: bool, write: bool, tries: int) -> None:
        """To the leader: this node, another through the forwarder, or a -MOVED."""

        def on_answer(answer: Answer) -> None:
            if answer.status is Outcome.REDIRECT and tries < MAX_REDIRECTS:
                # Later, not now: an answer may come while the driver carries out a
                # Ready, when the core takes no proposal.
                again = lambda: self._submit(session, slot, commands, multi=multi, write=write, tries=tries + 1)  # noqa: E731
                self.loop.call_later(0, lambda: self._guarded(session, again))
            else:
                self._guarded(session, lambda: self._done(session, slot, _reply(answer, multi)))

        leader = self._leader()
        session.in_flight_to = leader
        book = self.peers.book.get(leader) if leader is not None else None
        if leader == self.me:
            self.clients.handle(self.local, RedisRequest(id=self.local.ask(on_answer), commands=commands, multi=multi))
        elif leader is None or book is None:
            self._done(session, slot, redis.error("CLUSTERDOWN no leader: no command was run; try again shortly"))
        elif not self.limits.forward:
            self._done(session, slot, _moved(leader, book.redis))
        else:
            self.forwarder.send(leader, book.client, commands, multi=multi, write=write, on_answer=on_answer)

    def _done(self, session: RespSession, slot: Slot, reply: Any) -> None:
        session.in_flight -= 1
        self._fill(session, slot, reply)

    def _fill(self, session: RespSession, slot: Slot, reply: Any) -> None:
        """Answer one command; send every answer now due, in order."""
        slot.reply = reply
        conn, slots = session.conn, session.slots
        if conn.closed:
            return
        if slots[0] is not slot:
            slot.size = redis.reply_size(reply)
            session.held += slot.size
            if session.held > conn.max_buffer:
                self.remote_log("redis_output_full", level="warning", conn=conn.name, held=session.held)
                conn.close("too many answers held behind one not yet given")
                return
        while slots and slots[0].reply is not PENDING:
            done = slots.popleft()
            session.held -= done.size
            if not conn.write(encode_reply(done.reply, session.resp3)):
                self.remote_log("redis_output_full", level="warning", conn=conn.name)
                conn.close("output buffer full")
                return
        if session.quitting and not slots:
            conn.flush()
            conn.close("client quit")
        elif session.inbox and not session.taking and not session.take_due:
            # Not from here: answers arrive while the driver carries out a Ready, and
            # the commands waiting may propose. A timer runs before the next Ready.
            session.take_due = True
            self.loop.call_later(0, lambda: self._guarded(session, lambda: self._take_later(session)))

    def _take_later(self, session: RespSession) -> None:
        session.take_due = False
        if not session.conn.closed:
            self._take(session)


TRANSACTION_CONTROL = (b"exec", b"discard", b"multi", b"quit", b"reset")  # not queued inside MULTI


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
