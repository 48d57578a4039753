"""A follower's forwarder never turns a write that may have been applied into a
failure, and never sends anything twice: a connection lost after the request left
makes a write "unknown" and a read "no_leader"; a leader never reached makes
everything "no_leader"."""

from __future__ import annotations

import socket

from support import run_loop_until

from raftproc.runtime.loop import ConnectionSettings, EventLoop
from raftproc.runtime.protocol import Outcome
from raftproc.server.forward import Forwarder


def _forwarder(loop: EventLoop, events: list[str]) -> Forwarder:
    settings = ConnectionSettings(1 << 20, 1 << 20, 5.0, lambda event, **f: events.append(event))
    return Forwarder(loop=loop, settings=settings, log=lambda event, **f: events.append(event))


def test_a_lost_connection_makes_writes_unknown_and_reads_not_run():
    loop, events = EventLoop(), []
    leader = socket.create_server(("127.0.0.1", 0))
    forwarder = _forwarder(loop, events)
    answers: dict[str, object] = {}
    for name, write in (("write", True), ("read", False)):
        forwarder.send(
            2, leader.getsockname(), [[b"SET", b"k", b"v"]], multi=False, write=write, on_answer=lambda a, n=name: answers.update({n: a})
        )
    assert forwarder.in_flight == 2
    run_loop_until(loop, lambda: forwarder._current is not None and forwarder._current.up, what="the connection to come up")
    accepted, _ = leader.accept()
    got = b""
    accepted.setblocking(False)
    while len(got) < 20:  # both requests left this node

        def read_some() -> bool:
            nonlocal got
            try:
                got += accepted.recv(65536)
            except BlockingIOError:
                pass
            return len(got) >= 20

        run_loop_until(loop, read_some, what="the requests to arrive")
    accepted.close()  # the leader dies before answering
    run_loop_until(loop, lambda: len(answers) == 2, what="both answers")
    assert answers["write"].status is Outcome.UNKNOWN  # type: ignore[attr-defined]
    assert answers["read"].status is Outcome.NO_LEADER  # type: ignore[attr-defined]
    assert forwarder.in_flight == 0 and "forward_lost" in events
    leader.close()
    loop.close()


def test_a_leader_never_reached_ran_nothing():
    loop, events = EventLoop(), []
    s = socket.create_server(("127.0.0.1", 0))
    address = s.getsockname()
    s.close()  # nobody listens there now
    forwarder = _forwarder(loop, events)
    answers = []
    forwarder.send(2, address, [[b"SET", b"k", b"v"]], multi=False, write=True, on_answer=answers.append)
    run_loop_until(loop, lambda: answers, what="an answer")
    assert answers[0].status is Outcome.NO_LEADER and "unreachable" in answers[0].error
    loop.close()


def test_too_many_in_flight_are_refused_unsent():
    loop, events = EventLoop(), []
    leader = socket.create_server(("127.0.0.1", 0))
    forwarder = Forwarder(
        loop=loop, settings=ConnectionSettings(1 << 20, 1 << 20, 5.0, lambda e, **f: None), log=lambda e, **f: None, max_in_flight=3
    )
    answers = []
    for _ in range(5):
        forwarder.send(2, leader.getsockname(), [[b"GET", b"k"]], multi=False, write=False, on_answer=answers.append)
    assert forwarder.in_flight == 3 and [a.status for a in answers] == [Outcome.FAILED, Outcome.FAILED]
    forwarder.close()
    leader.close()
    loop.close()
