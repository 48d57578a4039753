"""Answers to clients, written in one place for every room that answers one.

A redirect names the leader's client address from the address book; without a
known leader the client hears "no_leader" and tries the next node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raftproc.core.node import RaftNode
from raftproc.runtime import codec
from raftproc.runtime.loop import Connection
from raftproc.runtime.protocol import Outcome, encode_answer
from raftproc.server.peers import Peers

Log = Callable[..., None]


class Replies:
    def __init__(self, *, me: int, raft: RaftNode, peers: Peers, log: Log) -> None:
        self.me = me
        self.raft = raft
        self.peers = peers
        self.log = log

    def answer(self, conn: Connection, request_id: int, status: Outcome, **fields: Any) -> None:
        conn.send(encode_answer(request_id, status, **fields))

    def ok(self, conn: Connection, request_id: int) -> None:
        """The answer to most writes, pre-encoded: the leader's hot path."""
        conn.send(codec.encode_ok_answer(request_id))

    def redirect(self, conn: Connection, request_id: int) -> None:
        leader = self.raft.leader_id
        address = self.peers.book.get(leader) if leader is not None and leader != self.me else None
        if address is None:
            self.answer(conn, request_id, status=Outcome.NO_LEADER)
            return
        host, port = address.client
        self.log("client_redirected", level="debug", leader=leader)
        self.answer(conn, request_id, status=Outcome.REDIRECT, leader=leader, leader_addr=f"{host}:{port}")
