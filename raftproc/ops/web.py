"""The live page's server (`supervisor.py web`): the page itself (raftproc/web, plain
files), the merged event stream as Server-Sent Events, the controls, a small client,
and replays of recorded runs. docs/watch.md has the API.

Every control does exactly what the supervisor command of the same name does: it
calls the same Cluster method. Process controls exist only for the nodes of the
run directory this supervisor runs; watching a cluster some other config describes
(`--config`) offers transfer and the client form only.

The page can kill processes, so the server guards its door: it listens on loopback
unless told otherwise, and then only with a token it prints; it answers only
requests whose Host header names it (a page on another site cannot reach it by DNS
rebinding), takes POSTs only with a header a cross-site form cannot send, and
bounds every request body, string and number it is sent.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import raftproc
from raftproc.client import ClientError
from raftproc.ops.cluster import Cluster, ClusterError
from raftproc.ops.replay import Recording, newest_recording
from raftproc.ops.watch import Collector
from raftproc.runtime.addresses import is_loopback

WEB_ROOT = Path(raftproc.__file__).parent / "web"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_STREAMS = 8  # pages watching at once
MAX_BODY = 64 * 1024
MAX_KEY_CHARS = 4096
MAX_VALUE_CHARS = 64 * 1024
SSE_PACE = 0.05  # seconds: events are sent in batches at most this often
KEEPALIVE = 15.0
NODE_ACTIONS = ("kill", "stop", "start", "restart", "pause", "resume", "partition", "add", "remove")
ACTIONS = (*NODE_ACTIONS, "split", "heal", "slow", "transfer", "join")


class Refused(Exception):
    """A request the page may not make (bad input, or not allowed here): 400."""


class Page:
    """What every request handler shares: the cluster, the stream, the replay."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        collector: Collector | None,
        recording: Recording | None,
        controls: bool,
        token: str | None,
        hosts: set[str],
    ) -> None:
        self.cluster = cluster
        self.collector = collector
        self.recording = recording
        self.controls = controls
        self.token = token
        self.hosts = hosts
        self.streams = 0
        self.lock = threading.Lock()
        self.acting: set[str] = set()

    @property
    def slowness(self) -> float:
        return max(1.0, self.cluster.config.tick_ms / 10)

    def meta(self) -> dict[str, Any]:
        if self.recording is not None:
            return {
                "mode": "replay",
                "nodes": self.recording.nodes,
                "controllable": [],
                "now": time.time(),
                "recording": str(self.recording.path),
                "tls": False,
                "link_faults": False,
            }
        cfg = self.cluster.config
        assert self.collector is not None and self.collector.recorder is not None
        return {
            "mode": "live",
            "nodes": sorted(cfg.nodes),
            "controllable": sorted(cfg.nodes) if self.controls else [],
            "now": time.time(),
            "tls": cfg.tls is not None,
            "recording": str(self.collector.recorder.path),
            "link_faults": cfg.link_faults and self.controls,
        }

    # --- controls -------------------------------------------------------------------

    def act(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        if action not in ACTIONS:
            raise Refused(f"unknown action; one of {', '.join(ACTIONS)}")
        if not self.controls and action != "transfer":
            raise Refused(f"{action} is for the nodes this supervisor runs; it watches a cluster it does not run")
        node = body.get("node")
        if action in NODE_ACTIONS or node is not None:
            node = self._node(node)
        key = f"{action} {node}"
        with self.lock:
            if key in self.acting:
                raise Refused(f"{key} is already under way")
            self.acting.add(key)
        assert self.collector is not None
        args = {k: body[k] for k in ("groups", "from", "to", "ms") if k in body}
        self.collector.note("action", action=action, node=node, phase="start", args=args)
        try:
            message = self._do(action, node, body)
            ok = True
        except (ClusterError, ClientError, ValueError, Refused) as e:
            message, ok = str(e), False
        finally:
            with self.lock:
                self.acting.discard(key)
        self.collector.note("action", action=action, node=node, phase="done" if ok else "failed", args=args, message=message)
        return {"ok": ok, "message": message}

    def _do(self, action: str, node: int | None, body: dict[str, Any]) -> str:
        if action in NODE_ACTIONS:
            assert node is not None, "act() resolves the node of every node action"
            return self._do_to_node(action, node)
        return self._do_to_cluster(action, node, body)

    def _do_to_node(self, action: str, node: int) -> str:
        c = self.cluster
        slow = self.slowness
        if action == "kill":
            c.kill(node)
            return f"node {node} killed (SIGKILL)"
        if action == "stop":
            new = c.graceful_stop(node, timeout=10 * slow)
            return f"node {node} stopped" + (f"; node {new} leads now" if new else "")
        if action in ("start", "restart"):
            pid = getattr(c, action)(node)
            return f"node {node} {action}ed (pid {pid})"
        if action in ("pause", "resume"):
            getattr(c, action)(node)
            return f"node {node} {action}d ({'SIGSTOP' if action == 'pause' else 'SIGCONT'})"
        if action in ("add", "remove"):
            result = getattr(c, action)(node, min(60 * slow, 600))
            return f"node {node} {'added' if action == 'add' else 'removed'}: voters {result['membership']['voters']}"
        return _links_said(f"node {node} is cut off from every other node", c.partition(node))

    def _do_to_cluster(self, action: str, node: int | None, body: dict[str, Any]) -> str:
        c = self.cluster
        slow = self.slowness
        if action == "transfer":
            return f"node {c.transfer(node, timeout=10 * slow)} leads now"
        if action == "join":
            new = c.join(timeout=min(60 * slow, 600))
            return f"node {new} joined: voters {c.members()['voters']}"
        if action == "split":
            groups = body.get("groups")
            if not (isinstance(groups, list) and 2 <= len(groups) <= 16 and all(isinstance(g, list) and g for g in groups)):
                raise Refused("split needs groups: [[1, 2], [3, 4, 5]]")
            groups = [[self._node(n) for n in g] for g in groups]
            return _links_said("cluster split into " + " | ".join(",".join(map(str, g)) for g in groups), c.split(groups))
        if action == "slow":
            src, dst, ms = self._node(body.get("from")), self._node(body.get("to")), body.get("ms")
            if type(ms) is not int:
                raise Refused("slow needs ms, a whole number")
            said = f"what node {src} sends node {dst} is held back {ms} ms" if ms else f"link {src} -> {dst} at full speed"
            return _links_said(said, c.slow_link(src, dst, ms))
        return _links_said("every link is whole again", c.heal())

    def _node(self, value: Any) -> int:
        nodes = self.cluster.config.nodes
        if type(value) is not int or value not in nodes:
            raise Refused(f"node must be one of {sorted(nodes)}")
        return value

    def client_request(self, body: dict[str, Any]) -> dict[str, Any]:
        op, key, value = body.get("op"), body.get("key"), body.get("value")
        if op not in ("set", "get"):
            raise Refused("op is set or get")
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
            raise Refused(f"key is 1 to {MAX_KEY_CHARS} characters")
        if op == "set" and not (isinstance(value, str) and len(value) <= MAX_VALUE_CHARS):
            raise Refused(f"set needs a value of at most {MAX_VALUE_CHARS} characters")
        written = value if op == "set" and isinstance(value, str) else None  # a get's value is its answer
        client = self.cluster.client(timeout=5 * self.slowness, attempt_timeout=1.0 * self.slowness)
        answer: dict[str, Any] = {"op": op, "key": key, "value": written}
        try:
            if written is not None:
                client.set(key, written, trace=True)
            else:
                answer["value"] = client.get(key)
            answer.update(ok=True, error=None)
        except ClientError as e:
            answer.update(ok=False, error=str(e))
        finally:
            client.close()
        answer.update(answered_by=client.answered_by if answer["ok"] else None, route=client.route)
        assert self.collector is not None
        return self.collector.note("client", **answer)


def _links_said(done: str, missed: dict[int, str]) -> str:
    if not missed:
        return done
    return done + "; " + "; ".join(f"node {n} takes it when it next starts ({why})" for n, why in sorted(missed.items()))


class Handler(BaseHTTPRequestHandler):
    page: Page  # set on the subclass that `WebServer` makes
    protocol_version = "HTTP/1.1"
    server_version = "raftproc-web"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are not news; the actions are in the stream and the recording

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in STATIC:
            name, ctype = STATIC[url.path]
            self._send(200, (WEB_ROOT / name).read_bytes(), ctype)
            return
        if not self._allowed(url):
            return
        query = parse_qs(url.query)
        page = self.page
        try:
            if url.path == "/api/meta":
                self._json(200, page.meta())
            elif url.path == "/api/stream" and page.collector is not None:
                self._stream()
            elif url.path.startswith("/api/replay/") and page.recording is not None:
                self._replay(url.path.removeprefix("/api/replay/"), query)
            else:
                self._json(404, {"error": "no such thing here"})
        except Refused as e:
            self._json(400, {"error": str(e)})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not self._allowed(url):
            return
        if self.headers.get("X-Raftproc-Page") != "1":
            self._json(403, {"error": "POSTs come from the page (X-Raftproc-Page: 1)"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._json(413, {"error": f"a request body is at most {MAX_BODY} bytes"})
            self.close_connection = True
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise Refused("the body is a JSON object")
            if url.path == "/api/action":
                self._json(200, self.page.act(body))
            elif url.path == "/api/client" and self.page.collector is not None:
                self._json(200, self.page.client_request(body))
            else:
                self._json(404, {"error": "no such thing here"})
        except ValueError:
            self._json(400, {"error": "the body is not JSON"})
        except Refused as e:
            self._json(400, {"error": str(e)})

    def _allowed(self, url: Any) -> bool:
        page = self.page
        if page.hosts and self.headers.get("Host", "") not in page.hosts:
            self._json(403, {"error": "wrong Host header"})
            return False
        if page.token is not None:
            given = self.headers.get("X-Raftproc-Token") or parse_qs(url.query).get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), page.token.encode()):
                self._json(403, {"error": "a token is needed: the one `supervisor.py web` printed"})
                return False
        return True

    def _replay(self, what: str, query: dict[str, list[str]]) -> None:
        rec = self.page.recording
        assert rec is not None
        if what == "index":
            self._json(200, rec.index())
        elif what == "keyframe":
            self._json(200, rec.keyframe(_number(query, "at", rec.start)))
        elif what == "events":
            lo = _number(query, "from", rec.start)
            events, more = rec.events(lo, _number(query, "to", lo + 10))
            self._json(200, {"events": events, "next": more})
        else:
            self._json(404, {"error": "index, keyframe or events"})

    def _stream(self) -> None:
        page = self.page
        with page.lock:
            if page.streams >= MAX_STREAMS:
                busy = True
            else:
                busy, page.streams = False, page.streams + 1
        if busy:
            self._json(503, {"error": f"{MAX_STREAMS} pages watch already"})
            return
        assert page.collector is not None
        sub = page.collector.subscribe()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")
            quiet_since = time.monotonic()
            while page.collector.running:
                events = sub.take(KEEPALIVE)
                if sub.overflowed:
                    break  # the page reconnects and starts from a new keyframe
                if events:
                    self.wfile.write(b"data: " + json.dumps(events, separators=(",", ":")).encode() + b"\n\n")
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE:
                    self.wfile.write(b": still here\n\n")
                    quiet_since = time.monotonic()
                self.wfile.flush()
                time.sleep(SSE_PACE)  # batches events: one message per pace, not one per event
        except OSError:
            pass  # the page went away
        finally:
            sub.close()
            with page.lock:
                page.streams -= 1
            self.close_connection = True

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body, separators=(",", ":")).encode(), "application/json")

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(data)


def _number(query: dict[str, list[str]], name: str, default: float) -> float:
    try:
        value = float(query.get(name, [default])[0])
    except ValueError:
        raise Refused(f"{name} is a number of seconds") from None
    if value != value or abs(value) > 1e12:
        raise Refused(f"{name} is out of range")
    return value


class WebServer:
    """The page's server in a thread of its own (`serve` runs one until Ctrl-C)."""

    def __init__(
        self, cluster: Cluster, *, listen: str = "127.0.0.1:7500", replay: str | Path | None = None, config: str | Path | None = None
    ) -> None:
        host, port = _listen_address(listen)
        self.token = None if is_loopback(host) else secrets.token_urlsafe(18)
        collector, recording = None, None
        if replay is not None:
            recording = Recording(newest_recording(Path(replay)))
            watched = cluster
        else:
            watched = Cluster(cluster.run_dir, config_path=config) if config else cluster
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            collector = Collector(
                lambda: watched.config,
                processes=None if config else watched.process_states,
                links=None if config else lambda: watched.links().describe(),
                record_to=cluster.run_dir / "watch" / f"{stamp}.jsonl",
            )
        self.collector = collector
        self.recording = recording
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        port = self.httpd.server_address[1]
        hosts = {f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"} if is_loopback(host) else set()
        page = Page(
            watched, collector=collector, recording=recording, controls=config is None and replay is None, token=self.token, hosts=hosts
        )
        self.page = page
        self.httpd.RequestHandlerClass = type("PageHandler", (Handler,), {"page": page})
        self.url = f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.collector is not None:
            self.collector.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        self.httpd.shutdown()
        self.httpd.server_close()


def _listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT; port 0 asks the kernel for a free one (tests do)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen is HOST:PORT, not {text[:80]!r}")
    return host.strip("[]"), int(port)


def serve(cluster: Cluster, *, listen: str, replay: str | None = None, config: str | None = None) -> int:
    try:
        server = WebServer(cluster, listen=listen, replay=replay, config=config)
    except (OSError, ValueError) as e:
        raise ClusterError(f"cannot serve the page on {listen}: {e}") from None
    server.start()
    if server.recording is not None:
        rec = server.recording
        print(f"replaying {rec.path} ({rec.end - rec.start:.0f} s, {len(rec.markers)} marks on its timeline)")
    else:
        assert server.collector is not None and server.collector.recorder is not None
        print(f"watching the cluster of {server.page.cluster.config_path}; recording to {server.collector.recorder.path}")
    if server.token:
        print("this page can kill processes: it is served to the network only with the token in its address")
    print(f"open {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)  # the server runs on its own thread until Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
