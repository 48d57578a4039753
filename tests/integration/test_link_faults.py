"""Injected link faults (raftproc.runtime.linkfaults, raftproc.server.links,
raftproc.ops.links): the request is bounded like every other, a delayed link keeps
its order and its bound in bytes, and the supervisor's table cuts both ways and
hands each node exactly its own part."""

from __future__ import annotations

import json

import pytest

from raftproc.ops.links import LinkTable, parse_groups
from raftproc.runtime import codec
from raftproc.runtime.codec import RemoteProtocolError
from raftproc.runtime.linkfaults import ENV, MAX_PEERS, LinkFaults, LinkFaultsError, parse_link_faults
from raftproc.runtime.loop import EventLoop
from raftproc.runtime.protocol import LinkFaultsRequest, decode_request
from raftproc.server.links import LinkShaper


class Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def test_a_links_request_is_decoded_and_bounded():
    body = {"t": "links", "id": 1, "drop_to": [2], "drop_from": [3], "delay_ms": [[2, 150], [4, 0]], "base_delay_ms": 40}
    req = decode_request(codec.encode(body))
    assert isinstance(req, LinkFaultsRequest)
    assert req.faults == LinkFaults(frozenset({2}), frozenset({3}), ((2, 150), (4, 0)), 40)
    for bad in (
        {"drop_to": list(range(1, MAX_PEERS + 2))},
        {"drop_to": [0]},
        {"drop_to": [2**63]},
        {"drop_from": ["2"]},
        {"drop_to": [True]},
        {"delay_ms": [[2, 60_001]]},
        {"delay_ms": [[2, -1]]},
        {"delay_ms": [[2]]},
        {"delay_ms": {"2": 5}},
        {"base_delay_ms": -5},
        {"base_delay_ms": 1.5},
    ):
        with pytest.raises(RemoteProtocolError):
            decode_request(codec.encode({"t": "links", "id": 1, **bad}))
        with pytest.raises(LinkFaultsError):
            parse_link_faults(bad)


def _loop_and_shaper(max_bytes: int = 10_000) -> tuple[EventLoop, Clock, LinkShaper]:
    clock = Clock()
    loop = EventLoop(clock)
    return loop, clock, LinkShaper(loop, max_bytes, LinkFaults(delay_ms=((2, 200),)))


def _advance(loop: EventLoop, clock: Clock, seconds: float) -> None:
    clock.t += seconds
    loop.run_once(0.0)


def test_a_delayed_link_holds_frames_until_their_time_and_never_reorders():
    loop, clock, shaper = _loop_and_shaper()
    out: list[bytes] = []
    send = lambda frame: out.append(frame) or True  # noqa: E731
    assert shaper.send(2, b"a", send) and shaper.send(3, b"to-3", send)
    assert out == [b"to-3"]  # an unslowed peer is not held
    _advance(loop, clock, 0.1)
    shaper.set(LinkFaults(delay_ms=((2, 20),)))  # a shorter delay must not let b overtake a
    assert shaper.send(2, b"b", send)
    _advance(loop, clock, 0.05)
    assert out == [b"to-3"]
    _advance(loop, clock, 0.06)
    assert out == [b"to-3", b"a", b"b"]
    shaper.set(LinkFaults())
    assert shaper.send(2, b"c", send) and out[-1] == b"c"
    loop.close()


def test_a_base_delay_holds_every_link_but_those_with_their_own():
    loop, clock, shaper = _loop_and_shaper()
    shaper.set(LinkFaults(delay_ms=((2, 0),), base_delay_ms=100))
    out: list[bytes] = []
    send = lambda frame: out.append(frame) or True  # noqa: E731
    shaper.send(2, b"fast", send)
    shaper.send(3, b"slow", send)
    assert out == [b"fast"]
    _advance(loop, clock, 0.11)
    assert out == [b"fast", b"slow"]
    loop.close()


def test_what_a_slow_link_holds_is_bounded_in_bytes():
    loop, clock, shaper = _loop_and_shaper(max_bytes=1000)
    out: list[bytes] = []
    send = lambda frame: out.append(frame) or True  # noqa: E731
    taken = [shaper.send(2, b"x" * 300, send) for _ in range(5)]
    assert taken == [True, True, True, False, False]
    _advance(loop, clock, 0.3)
    assert len(out) == 3 and shaper.send(2, b"x" * 300, send)
    loop.close()


def test_the_supervisors_table_cuts_both_ways_and_gives_each_node_its_part(tmp_path):
    table = LinkTable()
    table.split(parse_groups("1,2|3,4,5"))
    assert (1, 3) in table.cuts and (3, 1) in table.cuts and (1, 2) not in table.cuts
    table.slow(4, 5, 300)
    f3 = table.faults_for(3)
    assert f3.drop_to == {1, 2} and f3.drop_from == {1, 2} and f3.delay_ms == ()
    assert table.faults_for(4).delay_ms == ((5, 300),)
    table.slow_all(100)
    assert table.faults_for(3).base_delay_ms == 100
    table.save(tmp_path)
    again = LinkTable.load(tmp_path)
    assert again == table
    assert parse_link_faults(json.loads(again.env_for(4)[ENV])) == table.faults_for(4)
    again.heal()
    assert again.cuts == set() and again.delays == {} and again.faults_for(4).base_delay_ms == 100  # slow motion is not a fault
    again.slow_all(0)
    assert again.env_for(4) == {}
    with pytest.raises(ValueError):
        table.split([[1, 2], [2, 3]])
    with pytest.raises(ValueError):
        parse_groups("1,2,3")
    with pytest.raises(ValueError):
        table.slow(1, 1, 10)
