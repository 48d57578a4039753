"""Metrics, health and the watch stream over HTTP, served from the node's own event loop.

    GET /metrics   Prometheus text (prometheus_client's generate_latest over a collector
                   that reads the node when scraped; nothing is counted twice)
    GET /health    200 when the node knows a leader, can write its disk and has applied
                   what is committed (or applied something recently); 503 otherwise,
                   with the reason as JSON
    GET /events    what the live page draws, as JSON lines that never end
                   (raftproc.server.watch; docs/watch.md)

Series are named after etcd's (raftproc_server_*, raftproc_disk_*, raftproc_network_*),
plus prometheus_client's process_* series (RSS, open fds, CPU).

The HTTP side is deliberately small: one GET per connection, a request head of at
most MAX_HEAD_BYTES that must arrive within the handshake timeout, an answer, a close.
Anything else is answered 400/404/405 or closed; a scrape never blocks the loop for
longer than building the text takes. `/events` is the one answer that stays open: it
ends when the watcher closes, or falls too far behind (raftproc.server.watch).
"""

from __future__ import annotations

import json
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector

from raftproc.runtime.histogram import Histogram
from raftproc.runtime.loop import EventLoop, Listener
from raftproc.server.watch import MAX_WATCHER_BUFFER, Watch

MAX_HEAD_BYTES = 8192
MAX_CONNECTIONS = 64
Log = Callable[..., None]


@dataclass
class Reading:
    """What a scrape reports, read from the node at that moment."""

    node: int
    term: int
    is_leader: bool
    has_leader: bool
    leader_changes: int
    committed: int
    applied: int
    pending: int
    failed: int
    client_connections: int
    disk_full: bool
    fsync: Histogram
    snapshot_save: Histogram
    peer_rtt: dict[int, Histogram] = field(default_factory=dict)
    health_problem: str | None = None  # None: healthy
    diverged: bool = False  # raftproc.core.divergence: an alarm, not a state


class NodeCollector:
    """A prometheus_client custom collector: `collect()` turns one Reading into families."""

    def __init__(self, read: Callable[[], Reading]) -> None:
        self.read = read

    def collect(self):
        r = self.read()
        node = [str(r.node)]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["node"])
            g.add_metric(node, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["node"])
            c.add_metric(node, value)
            return c

        yield gauge("raftproc_server_has_leader", "1 if this node knows a leader", int(r.has_leader))
        yield gauge("raftproc_server_is_leader", "1 if this node leads", int(r.is_leader))
        yield counter("raftproc_server_leader_changes_seen", "Leader changes this node has seen since it started", r.leader_changes)
        yield counter("raftproc_server_proposals_committed", "The commit index (entries committed)", r.committed)
        yield counter("raftproc_server_proposals_applied", "The applied index (entries applied)", r.applied)
        yield gauge("raftproc_server_proposals_pending", "Client writes proposed here and not yet answered", r.pending)
        yield counter("raftproc_server_proposals_failed", "Client writes answered failed or unknown after they were proposed", r.failed)
        yield gauge("raftproc_server_term", "The current term", r.term)
        yield gauge("raftproc_server_client_connections", "Open client connections", r.client_connections)
        yield gauge("raftproc_disk_full", "1 while a write waits for room on the disk", int(r.disk_full))
        yield gauge(
            "raftproc_log_diverged",
            "1 once this node found its history differs from a leader's or a follower's "
            "where Raft says they agree (acknowledged writes may be lost)",
            int(r.diverged),
        )
        yield _histogram("raftproc_disk_wal_fsync_duration_seconds", "WAL fdatasync latency", r.fsync, ["node"], node)
        yield _histogram("raftproc_snapshot_save_duration_seconds", "Time to write a snapshot durably", r.snapshot_save, ["node"], node)
        rtt = HistogramMetricFamily(
            "raftproc_network_peer_round_trip_time_seconds",
            "AppendEntries round trip to each peer",
            labels=["node", "peer"],
        )
        for peer, h in sorted(r.peer_rtt.items()):
            rtt.add_metric([str(r.node), str(peer)], h.cumulative(), sum_value=h.total)
        yield rtt


def _histogram(name: str, doc: str, h: Histogram, labels: list[str], values: list[str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    family.add_metric(values, h.cumulative(), sum_value=h.total)
    return family


class MetricsServer:
    def __init__(
        self,
        loop: EventLoop,
        address: tuple[str, int],
        read: Callable[[], Reading],
        *,
        timeout: float,
        log: Log,
        watch: Watch | None = None,
    ) -> None:
        self.loop = loop
        self.read = read
        self.watch = watch
        self.timeout = timeout
        self.log = log
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(read))
        self.registry.register(ProcessCollector(registry=None))
        self.exchanges: set[_Exchange] = set()
        self.listener = Listener(loop, address, self._accept, log=log)

    def close(self) -> None:
        for ex in list(self.exchanges):
            ex.close()
        self.listener.close()

    def _accept(self, sock: socket.socket, addr: tuple) -> None:
        if len(self.exchanges) >= MAX_CONNECTIONS:
            sock.close()
            return
        self.exchanges.add(_Exchange(self, sock))

    def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)
        if path == "/health":
            r = self.read()
            body: dict[str, Any] = {"healthy": r.health_problem is None, "node": r.node, "term": r.term, "leader_known": r.has_leader}
            if r.health_problem is not None:
                body["reason"] = r.health_problem
            return (200 if r.health_problem is None else 503), "application/json", (json.dumps(body) + "\n").encode()
        return 404, "text/plain", b"try /metrics or /health\n"


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"


class _Exchange:
    """One HTTP connection: read a request head, answer, close."""

    def __init__(self, server: MetricsServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.head = bytearray()
        self.out = bytearray()
        self.closed = False
        self.streaming = False  # answering /events: open until the watcher leaves
        sock.setblocking(False)
        server.loop.sel.register(sock, selectors.EVENT_READ, self._on_event)
        server.loop.call_later(server.timeout, self._expire)

    def _on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_READ and self.streaming:
            self._read_while_streaming()
        elif mask & selectors.EVENT_READ and not self.out:
            self._read()
        if not self.closed and mask & selectors.EVENT_WRITE:
            self._write()

    def _read(self) -> None:
        try:
            data = self.sock.recv(MAX_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD_BYTES:
                self._respond(400, "text/plain", b"request head too large\n")
            return
        line = bytes(self.head[: self.head.find(b"\r\n")])
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._respond(400, "text/plain", b"bad request line\n")
            return
        try:
            method, path = parts[0].decode("ascii"), parts[1].decode("ascii")
        except UnicodeDecodeError:
            self._respond(400, "text/plain", b"bad request line\n")
            return
        if method == "GET" and path.split("?", 1)[0] == "/events" and self.server.watch is not None:
            self._stream()
            return
        self._respond(*self.server.answer(method, path))

    def _respond(self, status: int, content_type: str, body: bytes) -> None:
        head = f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        self.out = bytearray(head.encode() + body)
        self.server.loop.sel.modify(self.sock, selectors.EVENT_WRITE, self._on_event)
        self._write()

    def _stream(self) -> None:
        assert self.server.watch is not None
        self.streaming = True
        self.out += STREAM_HEAD
        if not self.server.watch.subscribe(self):
            self.streaming = False
            self._respond(503, "text/plain", b"too many watchers\n")
            return
        self._want_write()

    def push(self, data: bytes) -> bool:
        """The watch stream's next lines (raftproc.server.watch.Watcher)."""
        if self.closed or len(self.out) > MAX_WATCHER_BUFFER:
            return False
        self.out += data
        self._want_write()
        return True

    def _want_write(self) -> None:
        if not self.closed:
            self.server.loop.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self._on_event)

    def _read_while_streaming(self) -> None:
        """A watcher sends nothing after its request: bytes are dropped, and the end
        of its side is the end of the stream."""
        try:
            data = self.sock.recv(MAX_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    def _write(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self.out[:sent]
        if self.out:
            return
        if self.streaming:
            self.server.loop.sel.modify(self.sock, selectors.EVENT_READ, self._on_event)
        else:
            self.close()

    def _expire(self) -> None:
        if not self.streaming:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.exchanges.discard(self)
        if self.streaming and self.server.watch is not None:
            self.server.watch.feed.remove(self)
        try:
            self.server.loop.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
