"""Answers to clients, written in one place for every room that answers one.

A redirect names the leader's client address from the address book; without a
known leader the client hears "no_leader" and tries the next node.

Answers go to a connection, encoded, or to a LocalAsker: a request made inside
this process (the RESP port on the leader, raftproc.server.redis) gets its answer
handed over as it is, with nothing encoded and decoded again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from raftproc.core.node import RaftNode
from raftproc.runtime import codec
from raftproc.runtime.loop import Connection
from raftproc.runtime.protocol import Answer, Outcome, encode_answer
from raftproc.server.peers import Peers

Log = Callable[..., None]


class LocalAsker:
    """Where a connection would be, for requests made inside this process."""

    closed = False

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, Callable[[Answer], None]] = {}

    def ask(self, on_answer: Callable[[Answer], None]) -> int:
        """A request id whose answer goes to `on_answer`."""
        request_id = next(self._ids)
        self._waiting[request_id] = on_answer
        return request_id

    def deliver(self, answer: Answer) -> None:
        on_answer = self._waiting.pop(answer.id, None)
        if on_answer is not None:
            on_answer(answer)


Asker = Connection | LocalAsker


class Replies:
    def __init__(self, *, me: int, raft: RaftNode, peers: Peers, log: Log) -> None:
        self.me = me
        self.raft = raft
        self.peers = peers
        self.log = log

    def answer(self, conn: Asker, request_id: int, status: Outcome, **fields: Any) -> None:
        if isinstance(conn, LocalAsker):
            conn.deliver(Answer(id=request_id, status=status, **fields))
        else:
            conn.send(encode_answer(request_id, status, **fields))

    def ok(self, conn: Asker, request_id: int) -> None:
        """The answer to most writes, pre-encoded: the leader's hot path."""
        if isinstance(conn, LocalAsker):
            conn.deliver(Answer(id=request_id, status=Outcome.OK))
        else:
            conn.send(codec.encode_ok_answer(request_id))

    def redirect(self, conn: Asker, request_id: int) -> None:
        leader = self.raft.leader_id
        address = self.peers.book.get(leader) if leader is not None and leader != self.me else None
        if address is None:
            self.answer(conn, request_id, status=Outcome.NO_LEADER)
            return
        host, port = address.client
        self.log("client_redirected", level="debug", leader=leader)
        self.answer(conn, request_id, status=Outcome.REDIRECT, leader=leader, leader_addr=f"{host}:{port}")
