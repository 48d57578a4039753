"""Concurrent clients issuing random SET/GET/DEL/CAS, every operation recorded.

One JSON object per operation (history.jsonl), the format raftproc.checker reads:
client, op ("put" | "get" | "delete" | "cas"), key, value (the value written, else
null), expect (cas; null means absent), call and return (nanoseconds from one
monotonic clock shared by all clients; return is null when the outcome is unknown),
ok (true: happened; false: did not; null: unknown), output (the value read; null
for absent), and for a cas that ran and found another value, ok false with
"mismatch": true. Every written value is unique, so a read names its write. A
request the client library retried is one operation.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from raftproc.client import Client, Failed, Unknown
from raftproc.config import Address
from raftproc.ops.redis_client import RedisKvClient
from raftproc.runtime.tls import TlsFiles


class History:
    """The operations recorded so far: in memory, or, given `path`, streamed to that
    file as they return (a long run's history must not grow the process), with
    only the counts kept."""

    def __init__(self, path: Path | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.path = path
        self._file = open(path, "w", encoding="utf-8", buffering=1 << 20) if path is not None else None  # noqa: SIM115

    def add(self, record: dict[str, Any]) -> None:
        with self.lock:
            if self._file is not None:
                self._file.write(json.dumps(record) + "\n")
            else:
                self.records.append(record)
            if record["ok"] is None:
                self.counts["unknown"] += 1
            elif record["ok"] or record.get("mismatch"):
                self.counts["ok"] += 1
            else:
                self.counts["failed"] += 1

    def write(self, path: Path) -> None:
        with self.lock, open(path, "w", encoding="utf-8") as f:
            for r in sorted(self.records, key=lambda r: r["call"]):
                f.write(json.dumps(r) + "\n")

    def close(self) -> None:
        """Flush a streamed history to its file, which then holds every record."""
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def read(self) -> Iterator[dict[str, Any]]:
        """Every record, from the file when streamed (close() first)."""
        if self.path is None:
            yield from self.records
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def run_one(
    client: Client | RedisKvClient, history: History, client_no: int, op: str, key: str, value: str | None = None, expect: str | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {"client": client_no, "op": op, "key": key, "value": value, "expect": expect, "call": time.monotonic_ns()}
    try:
        if op == "put":
            client.set(key, value)  # type: ignore[arg-type]
            record.update(ok=True, output=None)
        elif op == "get":
            record.update(ok=True, output=client.get(key))
        elif op == "delete":
            client.delete(key)
            record.update(ok=True, output=None)
        else:
            result = client.cas(key, expect, value)  # type: ignore[arg-type]
            if result.get("ok"):
                record.update(ok=True, output=None)
            else:
                record.update(ok=False, mismatch=True, output=result.get("value"))
        record["return"] = time.monotonic_ns()
    except Failed:
        record.update(ok=False, output=None, **{"return": time.monotonic_ns()})
    except Unknown:
        record.update(ok=None, output=None, **{"return": None})
    history.add(record)
    return record


FINAL_READS_S = 120.0  # the final reads end within this, or say they did not


class Workload:
    """`clients` threads, each with its own Client, until stop() or `until` passes."""

    def __init__(
        self,
        addresses: dict[int, Address],
        *,
        clients: int,
        keys: int,
        seed: int,
        op_timeout: float = 3.0,
        read_mode: str = "index",
        tls: ssl.SSLContext | None = None,
        members: Callable[[], dict[int, Address]] | None = None,
        history: Path | None = None,
        redis_tls: TlsFiles | None = None,
        protocol: str = "native",
    ) -> None:
        """`tls`: the client context every client connects with (None: plaintext).
        `members`: the current members' client addresses, asked again after an
        operation that did not succeed, so clients follow the membership as nodes
        are replaced (a client that knows only removed nodes reaches nobody).
        `history`: stream the history to this file instead of keeping it.
        `protocol`: "native" (raftproc.client), or "redis": the addresses are RESP
        ports, spoken to through redis-py (raftproc.ops.redis_client; `redis_tls`:
        the certificate files it presents), and a cas only ever expects an absent key."""
        self.addresses = addresses
        self.members = members or (lambda: self.addresses)
        self.tls = tls
        self.read_mode = read_mode
        self.clients = clients
        self.keys = [f"k{i}" for i in range(keys)]
        self.seed = seed
        self.op_timeout = op_timeout
        self.history = History(history)
        self.protocol = protocol
        self.redis_tls = redis_tls
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, until: float) -> None:
        for n in range(self.clients):
            t = threading.Thread(target=self._client_loop, args=(n, until), name=f"client-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.op_timeout + 5)

    def _client_loop(self, n: int, until: float) -> None:
        rng = random.Random(self.seed * 1000 + n)
        client = self._client(self.addresses, rng, self.op_timeout)
        seen: dict[str, str | None] = {}
        counter = 0
        try:
            while not self._stop.is_set() and time.monotonic() < until:
                key = rng.choice(self.keys)
                kind = rng.choices(("put", "get", "delete", "cas"), weights=(35, 40, 10, 15))[0]
                counter += 1
                value = f"c{n}-{counter}"
                if kind == "cas":
                    expect = seen.get(key) if rng.random() < 0.7 and self.protocol != "redis" else None
                    record = run_one(client, self.history, n, "cas", key, value, expect)
                elif kind == "get":
                    record = run_one(client, self.history, n, "get", key)
                    if record["ok"]:
                        seen[key] = record["output"]
                elif kind == "put":
                    record = run_one(client, self.history, n, "put", key, value)
                    seen[key] = value
                else:
                    record = run_one(client, self.history, n, "delete", key)
                if record["ok"] is None or (record["ok"] is False and not record.get("mismatch")):
                    self._follow_members(client)
        finally:
            client.close()

    def _client(self, addresses: dict[int, Address], rng: random.Random, timeout: float) -> Any:
        if self.protocol == "redis":
            return RedisKvClient(addresses, timeout=timeout, rng=rng, tls=self.redis_tls)
        return Client(addresses, timeout=timeout, attempt_timeout=0.5, rng=rng, read_mode=self.read_mode, tls=self.tls)

    def _follow_members(self, client: Client | RedisKvClient) -> None:
        try:
            current = self.members()
        except Exception:  # noqa: BLE001 - the config file mid-write: keep what the client knows
            return
        if current:
            client.addresses = dict(current)

    def final_reads(self, within: float = FINAL_READS_S) -> str | None:
        """After healing: read every key once, so a lost write shows in the history.
        None when done; otherwise which keys were not read within `within` seconds."""
        deadline = time.monotonic() + within
        client = self._client(self.members(), random.Random(self.seed), 10.0)
        try:
            for done, key in enumerate(self.keys):
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"final reads did not finish within {within:.0f} s: {len(self.keys) - done} of {len(self.keys)} keys not read"
                client.timeout = min(10.0, left)
                if not run_one(client, self.history, self.clients, "get", key)["ok"]:
                    self._follow_members(client)
            return None
        finally:
            client.close()
