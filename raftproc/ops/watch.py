"""The supervisor's side of watching a cluster: every node's event stream (GET /events,
raftproc.server.watch) merged with what only the supervisor knows (its processes,
the links it cut or slowed, its own actions), kept as a picture of the present
(`keyframe`), recorded to a file, and handed to whoever subscribes (the live page).
docs/watch.md has every event's fields.

One thread reads each node's stream and reconnects while the node is away; one
polls the processes, the links table and the config (for nodes that joined). A
node's stream is not trusted further than the page needs: a line longer than
MAX_LINE_BYTES closes the connection, anything but a JSON object of a known kind
is dropped, and `node` is always the id of the address the stream came from.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from raftproc.config import ClusterConfig

NODE_KINDS = frozenset({"state", "msg", "log"})
MAX_LINE_BYTES = 256 * 1024
MAX_RECORDING_BYTES = 1 << 30
MAX_SUBSCRIBER_EVENTS = 50_000  # queued for one subscriber before it is cut loose
RECENT = 200  # told events (log, action, client, proc) a new subscriber gets
TOLD_KINDS = frozenset({"log", "action", "client", "proc"})
POLL_INTERVAL = 0.1  # seconds between looks at the processes and the links table
RECONNECT_INTERVAL = 0.5


class Picture:
    """The present as a keyframe holds it: each node's latest state and process, the
    link faults, and the last told events; events are applied in time order."""

    def __init__(self, recent: int = RECENT) -> None:
        self.states: dict[int, dict[str, Any]] = {}
        self.procs: dict[int, dict[str, Any]] = {}
        self.links: dict[str, Any] = {"t": 0.0, "kind": "links", "cuts": [], "delays": [], "base_ms": 0}
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)

    def apply(self, e: dict[str, Any]) -> None:
        kind, node = e.get("kind"), e.get("node")
        if kind == "state" and isinstance(node, int):
            self.states[node] = e
        elif kind == "proc" and isinstance(node, int):
            self.procs[node] = e
        elif kind == "links":
            self.links = e
        if kind in TOLD_KINDS:
            self.recent.append(e)

    def keyframe(self, t: float, nodes: list[int]) -> dict[str, Any]:
        ids = sorted(set(nodes) | set(self.states) | set(self.procs))
        return {
            "t": t,
            "kind": "keyframe",
            "nodes": {str(n): {"state": self.states.get(n), "proc": self.procs.get(n)} for n in ids},
            "links": self.links,
            "recent": list(self.recent),
        }

    def copy(self) -> Picture:
        p = Picture(self.recent.maxlen or RECENT)
        p.states, p.procs, p.links, p.recent = (
            dict(self.states),
            dict(self.procs),
            self.links,
            deque(self.recent, maxlen=self.recent.maxlen),
        )
        return p


class Subscription:
    """Events for one subscriber, in order; `take` waits for them."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.events: deque[dict[str, Any]] = deque()
        self.overflowed = False
        self.cond = threading.Condition(collector.lock)

    def take(self, timeout: float) -> list[dict[str, Any]]:
        with self.cond:
            if not self.events and not self.overflowed:
                self.cond.wait(timeout)
            out = list(self.events)
            self.events.clear()
            return out

    def close(self) -> None:
        self.collector.unsubscribe(self)


class Recorder:
    def __init__(self, path: Path, first: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self.bytes = 0
        self.write(first)

    def write(self, event: dict[str, Any]) -> None:
        if self.file is None:
            return
        line = json.dumps(event, separators=(",", ":")) + "\n"
        if self.bytes + len(line) > MAX_RECORDING_BYTES:
            self.file.write(json.dumps({"t": event.get("t", time.time()), "kind": "recording_full", "bytes": self.bytes}) + "\n")
            self.close()
            return
        self.file.write(line)
        self.bytes += len(line)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class Collector:
    def __init__(
        self,
        config: Callable[[], ClusterConfig],
        *,
        processes: Callable[[], dict[int, tuple[str, int | None]]] | None = None,
        links: Callable[[], dict[str, Any]] | None = None,
        record_to: Path | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """`config()`: the cluster's config, read again now and then (nodes join);
        `processes()`: {node: (state, pid)} of the processes this supervisor runs
        (None: it runs none); `links()`: its table of injected link faults."""
        self.config = config
        self.processes = processes
        self.links = links
        self.now = now
        self.lock = threading.Lock()
        self.picture = Picture()
        self.subscribers: list[Subscription] = []
        self.connected: dict[int, bool] = {}
        self.counted = 0  # events published since start
        self.running = False
        self._readers: dict[int, threading.Thread] = {}
        self._threads: list[threading.Thread] = []
        cfg = config()
        self.recorder = (
            Recorder(record_to, {"t": now(), "kind": "recording", "version": 1, "nodes": sorted(cfg.nodes)}) if record_to else None
        )

    # --- life -----------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._poll_once()
        t = threading.Thread(target=self._poll, name="watch-poll", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self.running = False
        for t in [*self._threads, *self._readers.values()]:
            t.join(timeout=2.0)
        with self.lock:
            if self.recorder is not None:
                self.recorder.close()
            for s in self.subscribers:
                s.overflowed = True
                s.cond.notify_all()

    # --- what goes in -------------------------------------------------------------------

    def note(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An event of the supervisor's own (an action, a client request)."""
        event = {"t": self.now(), "kind": kind, **fields}
        self.publish(event)
        return event

    def publish(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.picture.apply(event)
            if self.recorder is not None:
                self.recorder.write(event)
            self.counted += 1
            for s in self.subscribers:
                if len(s.events) >= MAX_SUBSCRIBER_EVENTS:
                    s.overflowed = True
                else:
                    s.events.append(event)
                s.cond.notify_all()

    # --- what goes out --------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """A subscription whose first event is the keyframe: the present, whole."""
        s = Subscription(self)
        with self.lock:
            s.events.append(self._keyframe())
            self.subscribers.append(s)
        return s

    def unsubscribe(self, s: Subscription) -> None:
        with self.lock:
            if s in self.subscribers:
                self.subscribers.remove(s)

    def keyframe(self) -> dict[str, Any]:
        with self.lock:
            return self._keyframe()

    def _keyframe(self) -> dict[str, Any]:
        return self.picture.keyframe(self.now(), list(self.config().nodes))

    # --- reading the nodes ----------------------------------------------------------------

    def _poll(self) -> None:
        last_flush = time.monotonic()
        while self.running:
            time.sleep(POLL_INTERVAL)  # the polling period of processes and links
            self._poll_once()
            if time.monotonic() - last_flush > 0.5:
                last_flush = time.monotonic()
                with self.lock:
                    if self.recorder is not None:
                        self.recorder.flush()

    def _poll_once(self) -> None:
        try:
            cfg = self.config()
        except Exception:  # noqa: BLE001 - a config being rewritten is read again next time
            return
        # Processes first: a recording then knows each node's process before its state.
        if self.processes is not None:
            for node_id, (state, pid) in self.processes().items():
                known = self.picture.procs.get(node_id)
                if known is None or known["state"] != state or known["pid"] != pid:
                    self.publish({"t": self.now(), "kind": "proc", "node": node_id, "state": state, "pid": pid})
        for node_id, node in cfg.nodes.items():
            if node_id not in self._readers and node.metrics is not None:
                t = threading.Thread(target=self._read_node, args=(node_id, node.metrics), name=f"watch-node-{node_id}", daemon=True)
                self._readers[node_id] = t
                t.start()
        if self.links is not None:
            table = self.links()
            if any(table[k] != self.picture.links.get(k) for k in ("cuts", "delays", "base_ms")):
                self.publish({"t": self.now(), "kind": "links", **table})

    def _read_node(self, node_id: int, address: tuple[str, int]) -> None:
        while self.running:
            try:
                with socket.create_connection(address, timeout=1.0) as sock:
                    sock.sendall(f"GET /events HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n\r\n".encode())
                    self._read_stream(node_id, sock)
            except OSError:
                pass
            if self.connected.get(node_id):
                self.connected[node_id] = False
                self.publish({"t": self.now(), "kind": "stream", "node": node_id, "state": "lost"})
            deadline = time.monotonic() + RECONNECT_INTERVAL
            while self.running and time.monotonic() < deadline:
                time.sleep(0.05)  # waiting out the reconnect interval, ready to stop

    def _read_stream(self, node_id: int, sock: socket.socket) -> None:
        buf = b""
        head_done = False
        while self.running:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue  # a quiet node: keep listening
            if not data:
                return
            buf += data
            if not head_done:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > 8192:
                        return
                    continue
                if not buf.startswith(b"HTTP/1.1 200"):
                    return
                head_done, buf = True, buf[end + 4 :]
                self.connected[node_id] = True
                self.publish({"t": self.now(), "kind": "stream", "node": node_id, "state": "connected"})
            *lines, buf = buf.split(b"\n")
            if len(buf) > MAX_LINE_BYTES:
                return
            for line in lines:
                event = _node_event(line, node_id)
                if event is not None:
                    self.publish(event)


def _node_event(line: bytes, node_id: int) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("kind") not in NODE_KINDS or not isinstance(event.get("t"), (int, float)):
        return None
    event["node"] = node_id
    return event
