"""What a node streams for the live page (raftproc.server.watch, docs/watch.md):
messages counted into one event per window but elections one by one, the log
events the page tells, no key or value of an untraced write, the state as a whole
on subscribe and on change, and watchers that fall behind cut loose. The last
tests run a real host in-process and read GET /events off its metrics port."""

from __future__ import annotations

import json
import socket
import time

from raftproc.config import ClusterConfig, NodeAddress
from raftproc.core.messages import AppendEntries, AppendEntriesResponse, Entry, RequestVote, RequestVoteResponse
from raftproc.kv.commands import Command
from raftproc.server.host import open_host
from raftproc.server.watch import MAX_WATCHERS, EventFeed, _label


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Sink:
    def __init__(self, room: int = 1 << 20) -> None:
        self.data = b""
        self.room = room
        self.closed = False

    def push(self, data: bytes) -> bool:
        if len(self.data) + len(data) > self.room:
            return False
        self.data += data
        return True

    def close(self) -> None:
        self.closed = True

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.data.splitlines()]


def append(dst: int, n: int, term: int = 2) -> AppendEntries:
    entries = tuple(Entry(term, 10 + i, b"x") for i in range(n))
    return AppendEntries(src=1, dst=dst, term=term, prev_log_index=9, prev_log_term=term, entries=entries, leader_commit=9)


def test_routine_messages_are_counted_into_one_event_per_window_and_votes_are_not():
    clock = Clock()
    feed = EventFeed(1, clock)
    sink = Sink()
    feed.add(sink)
    for i in range(500):
        clock.t += 0.0001
        feed.sent(append(2, 3), delivered=True)
        feed.sent(append(3, 0), delivered=i % 2 == 0)  # heartbeats, every other one lost
        feed.received(AppendEntriesResponse(src=2, dst=1, term=2, success=True, match_index=12))
    for voter in (2, 3):
        feed.received(RequestVoteResponse(src=voter, dst=1, term=3, vote_granted=voter == 2))
    feed.sent(RequestVote(src=1, dst=2, term=3, last_log_index=9, last_log_term=2), delivered=True)
    feed.flush_counted()
    feed.publish(feed.pending)
    events = sink.events()
    counted = {(e["dir"], e["peer"], e["type"], e["lost"]): e for e in events if e["type"] in ("append", "heartbeat", "append_resp")}
    assert counted[("sent", 2, "append", False)]["n"] == 500
    assert counted[("sent", 2, "append", False)]["entries"] == 1500
    assert counted[("sent", 3, "heartbeat", False)]["n"] == 250
    assert counted[("sent", 3, "heartbeat", True)]["n"] == 250
    assert counted[("recv", 2, "append_resp", False)]["ok"] is True
    assert len(counted) == 4
    votes = [e for e in events if e["type"] in ("vote", "vote_resp")]
    assert [(e["dir"], e["peer"], e["ok"]) for e in votes] == [("recv", 2, True), ("recv", 3, False), ("sent", 2, None)]
    assert all(e["n"] == 1 for e in votes)


def test_the_log_tap_passes_every_line_and_feeds_only_told_events_with_bounded_strings():
    lines: list[str] = []
    feed = EventFeed(4, Clock())
    log = feed.tap(lambda event, level="info", **f: lines.append(event))
    log("became_leader", last_log_index=7)
    feed.add(Sink())
    log("commit_advanced", commit_index=9)  # routine: in the JSON log, not on the page
    log("trace_sent", peer=2, command="SET x=" + "9" * 1000)
    log("became_leader", last_log_index=8)
    assert lines == ["became_leader", "commit_advanced", "trace_sent", "became_leader"]
    told = feed.pending
    assert [e["event"] for e in told] == ["trace_sent", "became_leader"]
    assert len(told[0]["command"]) == 200 and told[0]["node"] == 4


def test_an_untraced_write_shows_its_operation_only_and_a_traced_one_its_command():
    secret = Command("set", "password", "hunter2", client=7, seq=1).encode()
    traced = Command("set", "x", "10", client=7, seq=2, trace=True).encode()
    assert _label(Entry(3, 5, secret)) == ("set", False)
    assert _label(Entry(3, 6, traced)) == ("SET x=10", True)
    assert _label(Entry(3, 7, None)) == ("noop", False)
    assert _label(Entry(3, 8, Command("del", "k" * 5000, client=7, seq=3).encode())) == ("del", False)


def _host(tmp_path):
    cfg = ClusterConfig(
        nodes={1: NodeAddress(1, ("127.0.0.1", 0), ("127.0.0.1", 0), metrics=("127.0.0.1", 0))},
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
    )
    return open_host(cfg, 1, log=lambda event, **fields: None)


def _watch(host) -> socket.socket:
    sock = socket.create_connection(host.metrics.listener.sock.getsockname(), timeout=5)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.setblocking(False)
    return sock


def _drain(host, sock: socket.socket, until, timeout: float = 10.0) -> list[dict]:
    """Drive the host's loop, reading what it streams, until `until(events)` holds."""
    buf, events = b"", []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        host.loop.run_once(0.01)
        try:
            data = sock.recv(1 << 16)
            if not data:
                break
            buf += data
        except BlockingIOError:
            pass
        if b"\r\n\r\n" in buf:
            head, _, body = buf.partition(b"\r\n\r\n")
            *lines, _ = body.split(b"\n")
            events = [json.loads(line) for line in lines]
            if until(events):
                return events
    raise AssertionError(f"stream did not show it within {timeout}s; got {[e['kind'] for e in events][-20:]}")


def test_a_host_streams_its_state_and_tells_its_election(tmp_path):
    host = _host(tmp_path)
    try:
        sock = _watch(host)
        events = _drain(host, sock, lambda es: any(e["kind"] == "state" and e["role"] == "leader" and e["commit"] >= 1 for e in es))
        first = events[0]
        assert first["kind"] == "state" and first["role"] == "follower" and first["timer"][1] >= 150
        told = [e["event"] for e in events if e["kind"] == "log"]
        assert "became_leader" in told
        leading = [e for e in events if e["kind"] == "state" and e["role"] == "leader"][-1]
        assert leading["log"][0][:3] == [1, leading["term"], "noop"] and leading["timer"] is None
        sock.close()
    finally:
        host.close()


def test_watchers_are_bounded_and_one_that_stops_reading_is_cut_loose(tmp_path):
    host = _host(tmp_path)
    try:
        socks = [_watch(host) for _ in range(MAX_WATCHERS)]
        _drain(host, socks[0], lambda es: len(es) >= 1)
        one_too_many = _watch(host)
        answer = b""
        deadline = time.monotonic() + 5
        while b"503" not in answer and time.monotonic() < deadline:
            host.loop.run_once(0.01)
            try:
                answer += one_too_many.recv(4096)
            except BlockingIOError:
                pass
        assert answer.startswith(b"HTTP/1.1 503")
        # A watcher whose socket buffers are full and who reads nothing falls behind
        # by more than the limit and is dropped; the node goes on.
        for s in socks[1:]:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        feed = host.metrics.watch.feed
        big = {"t": 0.0, "kind": "log", "node": 1, "event": "x", "pad": "y" * 60_000}
        deadline = time.monotonic() + 10
        while len(feed.watchers) > 1 and time.monotonic() < deadline:
            feed.publish([big])
            host.loop.run_once(0.0)
            try:
                while socks[0].recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
        assert len(feed.watchers) == 1, "the watchers that stopped reading are still attached"
    finally:
        host.close()
