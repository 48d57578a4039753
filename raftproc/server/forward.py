"""Redis commands a follower took, sent on to the leader's client port.

One connection per leader, multiplexed: each request carries an id, and the
leader's answer comes back to whoever asked under that id, in whatever order the
leader answers. The RESP room (raftproc.server.redis) puts answers back in the
order each client asked.

Nothing is sent twice. A forwarded command is never retried here, so it is applied
at most once; when the connection drops with commands in flight, a write whose
bytes may have left is answered "unknown" (it may have been applied) and a read is
answered "no_leader" (it changed nothing). If the connection never came up, nothing
left at all: every command on it is answered "no_leader". A change of leader sends
new commands to the new one; the old connection stays until its answers are in.

In flight at once: at most `max_in_flight` commands, across every connection;
more are answered "failed" (not sent) at once. Nobody waits forever on a leader
that stopped answering (paused, or gone without a reset): `sweep`, each second,
closes a connection whose oldest command has waited ANSWER_TIMEOUT, or a former
leader's that has drained for DRAIN_TIMEOUT, answering what waited on it as above.
It also closes a connection idle for half the idle timeout, before the leader's
idle sweep could close it under a command just sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raftproc.runtime.addresses import Address
from raftproc.runtime.codec import RemoteProtocolError
from raftproc.runtime.loop import Connection, ConnectionSettings, EventLoop, dial
from raftproc.runtime.protocol import Answer, Outcome, RedisRequest, decode_answer, encode_request
from raftproc.runtime.tls import node_identity

Log = Callable[..., None]
OnAnswer = Callable[[Answer], None]
ANSWER_TIMEOUT = 10.0  # seconds the current leader may take to answer a command
DRAIN_TIMEOUT = 2.0  # seconds a former leader may take to answer what it was sent


@dataclass(slots=True)
class _Waiting:
    on_answer: OnAnswer
    write: bool
    sent_at: float


class _Upstream:
    """The connection to one leader's client port, and who waits on it."""

    def __init__(self, forwarder: Forwarder, leader: int, address: Address) -> None:
        self.forwarder = forwarder
        self.leader = leader
        self.address = address
        self.waiting: dict[int, _Waiting] = {}  # in the order sent: the first waited longest
        self.up = False
        self.used_at = forwarder.loop.clock()
        self.draining_since: float | None = None
        sock = dial(address)
        f = forwarder
        self.conn: Connection = f.settings.open(
            f.loop,
            sock,
            name=f"forward-to-{leader}",
            on_frame=self._on_frame,
            on_close=self._on_close,
            on_connected=self._on_connected,
            dialled=True,
        )

    def _on_connected(self, conn: Connection) -> None:
        if self.forwarder.settings.tls is not None and conn.identity != node_identity(self.leader):
            # Commands go to the leader, not to whoever answers at its address.
            self.forwarder.log("forward_identity_refused", level="error", leader=self.leader, identity=str(conn.identity))
            conn.close("the certificate there is not the leader's")
            return
        self.up = True

    def _on_frame(self, conn: Connection, body: bytes) -> None:
        try:
            answer = decode_answer(body)
        except RemoteProtocolError as e:
            self.forwarder.log("frame_error", level="warning", conn=conn.name, error=str(e))
            conn.close("protocol error")
            return
        waiting = self.waiting.pop(answer.id, None)
        if waiting is not None:
            self.forwarder.in_flight -= 1
            waiting.on_answer(answer)
        self.forwarder.drop_if_done(self)

    def _on_close(self, conn: Connection, reason: str) -> None:
        waiting, self.waiting = self.waiting, {}
        f = self.forwarder
        f.in_flight -= len(waiting)
        f.forget(self)
        if waiting:
            f.log("forward_lost", level="warning", leader=self.leader, reason=reason, in_flight=len(waiting), connected=self.up)
        for request_id, w in waiting.items():
            if w.write and self.up:
                w.on_answer(Answer(id=request_id, status=Outcome.UNKNOWN, error=f"lost the connection to leader {self.leader}: {reason}"))
            else:
                w.on_answer(Answer(id=request_id, status=Outcome.NO_LEADER, error=f"leader {self.leader} is unreachable: {reason}"))


class Forwarder:
    def __init__(self, *, loop: EventLoop, settings: ConnectionSettings, log: Log, max_in_flight: int = 10_000) -> None:
        self.loop = loop
        self.settings = settings
        self.log = log
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._current: _Upstream | None = None
        self._draining: set[_Upstream] = set()  # connections to former leaders, still owed answers
        self._next_id = 0

    def send(self, leader: int, address: Address, commands: list[list[bytes]], *, multi: bool, write: bool, on_answer: OnAnswer) -> None:
        if self.in_flight >= self.max_in_flight:
            error = f"{self.in_flight} commands are in flight to the leader (the limit); this one was not sent"
            on_answer(Answer(id=0, status=Outcome.FAILED, error=error))
            return
        upstream = self._upstream(leader, address)
        self._next_id += 1
        request_id = self._next_id
        if not upstream.conn.send(encode_request(RedisRequest(id=request_id, commands=commands, multi=multi))):
            on_answer(Answer(id=request_id, status=Outcome.FAILED, error=f"the queue to leader {leader} is full; this one was not sent"))
            return
        upstream.waiting[request_id] = _Waiting(on_answer, write, self.loop.clock())
        upstream.used_at = self.loop.clock()
        self.in_flight += 1

    def _upstream(self, leader: int, address: Address) -> _Upstream:
        current = self._current
        if current is not None and (current.leader, current.address) == (leader, address) and not current.conn.closed:
            return current
        if current is not None:
            current.draining_since = self.loop.clock()
            self._draining.add(current)
            self.drop_if_done(current)
        self._current = _Upstream(self, leader, address)
        return self._current

    def drop_if_done(self, upstream: _Upstream) -> None:
        """A former leader's connection closes once nothing waits on it."""
        if upstream in self._draining and not upstream.waiting:
            self._draining.discard(upstream)
            upstream.conn.close("leader changed")

    def forget(self, upstream: _Upstream) -> None:
        self._draining.discard(upstream)
        if self._current is upstream:
            self._current = None

    def sweep(self, idle_seconds: float) -> None:
        now = self.loop.clock()
        for upstream in list(self._draining):
            since = upstream.draining_since if upstream.draining_since is not None else now
            if now - since > DRAIN_TIMEOUT:
                upstream.conn.close(f"former leader {upstream.leader} did not answer within {DRAIN_TIMEOUT:.0f} s")
        current = self._current
        if current is None:
            return
        if current.waiting:
            oldest = next(iter(current.waiting.values()))
            if now - oldest.sent_at > ANSWER_TIMEOUT:
                current.conn.close(f"leader {current.leader} did not answer within {ANSWER_TIMEOUT:.0f} s")
        elif now - current.used_at > idle_seconds / 2:
            current.conn.close("idle")

    def close(self) -> None:
        for upstream in [*self._draining, *([self._current] if self._current else [])]:
            upstream.conn.close("node shutting down")
