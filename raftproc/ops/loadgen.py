"""A load generator process: keeps N requests in flight against one node and
reports throughput and latencies of a measured window as one JSON line.

    python -m raftproc.ops.loadgen --target HOST:PORT --inflight 128 --warmup 2 --window 5

Requests are pipelined: each connection carries up to `inflight / connections`
requests at once, matched to answers by id. Every answer that is not "ok" counts as
an error (and its request is not retried: the load shape stays fixed).
With `--config` naming a cluster that runs TLS, every connection speaks it, with
the config's client certificate.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import selectors
import socket
import ssl
import sys
import time
from typing import Any

from raftproc.runtime.framing import FrameDecoder, encode_frame
from raftproc.runtime.protocol import KvRequest, Outcome, decode_answer, encode_request

TLS_WRITE_BYTES = 256 * 1024


def summarize(latencies: list[int], done: int, errors: int, window: float, cpu: float) -> dict:
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6 if latencies else float("nan")

    return {
        "ops": done,
        "errors": errors,
        "window": window,
        "ops_per_s": done / window,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "cpu_s": cpu,
    }


def run(
    target: tuple[str, int],
    inflight: int,
    warmup: float,
    window: float,
    value_size: int,
    keys: int,
    connections: int,
    seed: int,
    protocol: str = "raftproc",
    rate: float = 0.0,
    count: int = 0,
    unique: bool = False,
    read: str = "",
    tls: ssl.SSLContext | None = None,
    fresh_clients: bool = False,
) -> dict:
    """Closed loop: `inflight` requests always outstanding. With `rate` > 0, open loop:
    requests leave on a fixed schedule (up to `inflight` outstanding) and latency runs
    from the scheduled moment, so a stall is not hidden by sending less during it.
    With `count` > 0: exactly `count` writes, measured from the start; `window` caps
    the time. With `unique`, each write goes to a key of its own (`u<seed>-<n>`), to
    fill a store with that many keys. With `read` (log, index or lease): gets with
    that read mode instead of sets. With `fresh_clients`, every request comes from a
    client id of its own (each opens a session on the cluster)."""
    if protocol == "etcd":
        return run_etcd(target, inflight, warmup, window, value_size, keys, seed)
    load = _Load(target, connections=min(connections, inflight), value_size=value_size, read=read, tls=tls, seed=seed)
    load.count, load.unique, load.keys, load.fresh_clients = count, unique, keys, fresh_clients
    if not rate:
        for st in load.conns:
            for _ in range(max(1, inflight // connections)):
                load.send_one(st)
    start = time.perf_counter()
    next_at_ns = time.perf_counter_ns()
    interval_ns = int(1e9 / rate) if rate else 0
    turn = 0
    load.measure_from, load.measure_to = (start, start + window) if count else (start + warmup, start + warmup + window)
    cpu0 = None
    while True:
        now = time.perf_counter()
        if now >= load.measure_to or (count and load.done + load.errors >= count):
            break
        if cpu0 is None and now >= load.measure_from:
            cpu0 = sum(os.times()[:2])
        if rate:
            now_ns = time.perf_counter_ns()
            while next_at_ns <= now_ns and sum(len(st["sent"]) for st in load.conns) < inflight:
                load.send_one(load.conns[turn % len(load.conns)], next_at_ns)
                turn += 1
                next_at_ns += interval_ns
        load.flush()
        wait = max(0.0, (next_at_ns - time.perf_counter_ns()) / 1e9) if rate else 0.05
        load.receive(min(wait, 0.05), resend=not rate)
    load.close()
    elapsed = time.perf_counter() - start if count else window
    result = summarize(load.latencies, load.done, load.errors, elapsed, sum(os.times()[:2]) - (cpu0 or 0))
    result["redirects"] = load.redirects
    return result


class _Load:
    """The pipelined connections of one run, what each has in flight, and what the
    measured window saw."""

    def __init__(
        self, target: tuple[str, int], *, connections: int, value_size: int, read: str, tls: ssl.SSLContext | None, seed: int
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.tls = tls
        self.sel = selectors.DefaultSelector()
        self.count = self.issued = self.keys = 0
        self.unique = self.fresh_clients = False
        self.measure_from = self.measure_to = 0.0
        self.latencies: list[int] = []
        self.done = self.errors = 0
        self.redirects = 0  # connections moved to the leader a redirect named
        self.conns = [self._connect(target, value_size, read) for _ in range(connections)]

    def _connect(self, target: tuple[str, int], value_size: int, read: str) -> dict[str, Any]:
        s = self._dial(target)
        # One request per connection, changed in place for each send: the hot loop
        # builds no object but the frame.
        req = KvRequest(
            id=0,
            op="get" if read else "set",
            key="",
            value=None if read else "v" * value_size,
            expect=None,
            client=0,
            seq=0,
            read=read or "log",
        )
        req.client = self.rng.getrandbits(60) + 1
        state: dict[str, Any] = {"sock": s, "dec": FrameDecoder(), "out": bytearray(), "sent": {}, "req": req}
        self.sel.register(s, selectors.EVENT_READ, state)
        return state

    def _dial(self, target: tuple[str, int]) -> socket.socket:
        s = socket.create_connection(target, timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            s = self.tls.wrap_socket(s)  # the handshake, blocking
        s.setblocking(False)
        return s

    def _follow(self, st: dict[str, Any], leader_addr: str) -> int:
        """Move a connection to the leader a redirect named (a run aimed at a node that
        lost leadership would otherwise measure nothing but redirects). Returns how many
        requests were outstanding on the old connection: their answers are not waited
        for, and a closed loop sends as many anew."""
        host, _, port = leader_addr.rpartition(":")
        self.sel.unregister(st["sock"])
        st["sock"].close()
        st["sock"] = self._dial((host, int(port)))
        st["dec"], st["out"] = FrameDecoder(), bytearray()
        dropped = len(st["sent"])
        st["sent"] = {}
        self.sel.register(st["sock"], selectors.EVENT_READ, st)
        self.redirects += 1
        return dropped

    def send_one(self, st: dict[str, Any], at: int | None = None) -> None:
        if self.count and self.issued >= self.count:
            return
        self.issued += 1
        req = st["req"]
        req.seq += 1
        req.id += 1
        if self.fresh_clients:
            req.client, req.seq = self.rng.getrandbits(60) + 1, 1
        req.key = f"u{self.seed}-{self.issued}" if self.unique else f"k{self.rng.randrange(self.keys)}"
        st["out"] += encode_frame(encode_request(req))
        st["sent"][req.id] = at or time.perf_counter_ns()

    def flush(self) -> None:
        for st in self.conns:
            if st["out"]:
                try:
                    # Under TLS a retried write must pass at least the bytes it passed
                    # before; `out` only grows until a send succeeds.
                    n = st["sock"].send(st["out"] if self.tls is None else st["out"][:TLS_WRITE_BYTES])
                    del st["out"][:n]
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass

    def receive(self, wait: float, *, resend: bool) -> None:
        """Take the answers that arrived within `wait`; `resend`: a closed loop sends
        a new request for each."""
        for key, _ in self.sel.select(wait):
            st = key.data
            try:
                data = _recv(st["sock"])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            if not data:
                raise ConnectionError("node closed the connection")
            t = time.perf_counter_ns()
            in_window = self.measure_from <= time.perf_counter() < self.measure_to
            for frame in st["dec"].feed(data):
                answer = decode_answer(frame)
                if answer.status is Outcome.REDIRECT and answer.leader_addr:
                    # Not applied (a redirect says so): this request and the rest in
                    # flight here go again, to the leader.
                    again = self._follow(st, answer.leader_addr)
                    for _ in range(again if resend else 0):
                        self.send_one(st)
                    break
                sent = st["sent"].pop(answer.id)
                if in_window:
                    if answer.status is Outcome.OK:
                        self.done += 1
                        self.latencies.append(t - sent)
                    else:
                        self.errors += 1
                if resend:
                    self.send_one(st)

    def close(self) -> None:
        for st in self.conns:
            st["sock"].close()


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 20)
    if isinstance(sock, ssl.SSLSocket):
        while sock.pending():  # decrypted already: select() would not report it
            data += sock.recv(sock.pending())
    return data


def run_etcd(target: tuple[str, int], inflight: int, warmup: float, window: float, value_size: int, keys: int, seed: int) -> dict:
    """etcd's JSON gateway (POST /v3/kv/put), one request in flight per keep-alive
    connection, `inflight` connections."""
    rng = random.Random(seed)
    value = base64.b64encode(b"v" * value_size).decode()
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(inflight):
        s = socket.create_connection(target, timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        st: dict[str, Any] = {"sock": s, "buf": bytearray(), "sent": 0}
        conns.append(st)
        sel.register(s, selectors.EVENT_READ, st)

    def send_one(st: dict) -> None:
        key = base64.b64encode(f"k{rng.randrange(keys)}".encode()).decode()
        body = json.dumps({"key": key, "value": value}).encode()
        head = f"POST /v3/kv/put HTTP/1.1\r\nHost: {target[0]}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        st["sent"] = time.perf_counter_ns()
        st["sock"].sendall(head.encode() + body)

    for st in conns:
        send_one(st)
    start = time.perf_counter()
    measure_from, measure_to = start + warmup, start + warmup + window
    latencies: list[int] = []
    done = errors = 0
    cpu0 = None
    while time.perf_counter() < measure_to:
        if cpu0 is None and time.perf_counter() >= measure_from:
            cpu0 = sum(os.times()[:2])
        for key, _ in sel.select(0.05):
            st = key.data
            data = st["sock"].recv(1 << 16)
            if not data:
                raise ConnectionError("etcd closed the connection")
            st["buf"] += data
            buf = st["buf"]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = bytes(buf[:end]).decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0]) if "content-length:" in head else 0
            if len(buf) < end + 4 + length:
                continue
            ok = head.startswith("http/1.1 200")
            del buf[: end + 4 + length]
            t = time.perf_counter_ns()
            if measure_from <= time.perf_counter() < measure_to:
                if ok:
                    done += 1
                    latencies.append(t - st["sent"])
                else:
                    errors += 1
            send_one(st)
    for st in conns:
        st["sock"].close()
    return summarize(latencies, done, errors, window, sum(os.times()[:2]) - (cpu0 or 0))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--inflight", type=int, default=1)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--window", type=float, default=3.0)
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--protocol", choices=("raftproc", "etcd"), default="raftproc")
    p.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second (0: closed loop)")
    p.add_argument("--count", type=int, default=0, help="exactly this many writes; --window caps the time")
    p.add_argument("--unique", action="store_true", help="each write to a key of its own")
    p.add_argument("--read", choices=("", "log", "index", "lease"), default="", help="gets with this read mode instead of sets")
    p.add_argument("--fresh-clients", action="store_true", help="every request from a new client id")
    p.add_argument("--config", help="the cluster's config: with [tls], connect with its client certificate")
    a = p.parse_args()
    tls = None
    if a.config:
        from raftproc.config import load_config
        from raftproc.runtime.tls import client_context_for

        tls = client_context_for(load_config(a.config).client_tls())
    host, _, port = a.target.rpartition(":")
    result = run(
        (host, int(port)),
        a.inflight,
        a.warmup,
        a.window,
        a.value_size,
        a.keys,
        a.connections,
        a.seed,
        a.protocol,
        a.rate,
        a.count,
        a.unique,
        a.read,
        tls,
        a.fresh_clients,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
