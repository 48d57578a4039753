"""The chaos workload's Redis client (raftproc.ops.redis_client) against Debian's
redis-server, a real RESP server: what a refused or timed-out command becomes in
the history, that redis-py never sends one twice, and a short concurrent history
through it that the checker finds linearizable. (tests/integration/test_redis_client.py
covers the error replies only raftproc's port gives, and a connection cut after a
command left, with a scripted port.)"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator

import pytest
import redis
from support import wait_until

from raftproc.checker import check_history
from raftproc.client import Failed, Unknown
from raftproc.ops.bench.redis import RedisServer
from raftproc.ops.layout import free_ports
from raftproc.ops.redis_client import RedisKvClient
from raftproc.ops.workload import History, Workload, run_one

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not on PATH (Debian: redis-server)")
    s = RedisServer("redis-memory", durable=False)
    yield s
    s.close()


@pytest.fixture
def admin(server) -> Iterator[redis.Redis]:
    """A client of the server's own, for what the workload's clients must not do."""
    r = redis.Redis(*server.address, socket_timeout=10, retry=None, decode_responses=True)
    r.flushall()
    yield r
    r.close()


def kv(server, timeout: float = 5.0) -> RedisKvClient:
    return RedisKvClient({1: server.address}, timeout=timeout, rng=random.Random(1))


def test_redis_client_operations_and_cas_against_absence(server, admin):
    c = kv(server)
    history = History()
    assert run_one(c, history, 0, "get", "x")["output"] is None
    assert run_one(c, history, 0, "cas", "x", "v1", None)["ok"] is True and admin.get("x") == "v1"
    found = run_one(c, history, 0, "cas", "x", "v2", None)
    assert found["ok"] is False and found["mismatch"] and found["output"] == "v1" and admin.get("x") == "v1"
    assert run_one(c, history, 0, "put", "x", "v3")["ok"] is True and run_one(c, history, 0, "get", "x")["output"] == "v3"
    assert run_one(c, history, 0, "delete", "x")["ok"] is True and admin.exists("x") == 0
    with pytest.raises(ValueError):
        c.cas("x", "v3", "v4")  # no comparison against a value over RESP
    assert check_history(history.records).ok
    c.close()


def test_redis_client_refused_node_is_passed_over(server, admin):
    """A refused connection sent nothing: the write goes to the next node."""
    (nobody,) = free_ports(1)
    for first in (0, 1):  # whichever node the client starts at
        c = RedisKvClient({1: ("127.0.0.1", nobody), 2: server.address}, timeout=2.0, rng=random.Random(first))
        c.set("k", f"v{first}")
        assert admin.get("k") == f"v{first}"
        c.close()


def test_redis_client_timeout_write_unknown_read_failed(server, admin):
    writer, reader = kv(server, timeout=0.3), kv(server, timeout=0.3)
    writer.get("k"), reader.get("k")  # both connected before the server stops answering
    admin.client_pause(1000, all=True)
    with pytest.raises(Unknown):
        writer.set("k", "late")
    with pytest.raises(Failed):
        reader.get("k")
    writer.close(), reader.close()


def test_redis_client_never_resends_a_command(server, admin):
    """A write that timed out is not sent again: redis-py's default retry would
    reconnect and resend it, one recorded operation applied twice."""
    c = kv(server, timeout=0.3)
    c.get("k")
    connections = admin.info("stats")["total_connections_received"]
    admin.client_pause(5000, all=False)  # writes wait; a reconnection's handshake would not
    try:
        with pytest.raises(Unknown):
            c.set("k", "v")
        assert admin.info("stats")["total_connections_received"] == connections
    finally:
        admin.client_unpause()
    c.close()


def test_redis_workload_history_is_linearizable(server, admin, tmp_path):
    """Four clients on two keys through redis-py, every op kind, the history checked."""
    workload = Workload({1: server.address}, clients=4, keys=2, seed=3, history=tmp_path / "history.jsonl", protocol="redis")
    workload.start(until=time.monotonic() + 20.0)
    wait_until(lambda: workload.history.counts["ok"] >= 400, timeout=20.0, what="400 operations through redis-py")
    workload.stop()
    workload.history.close()
    records = list(workload.history.read())
    kinds = {(r["op"], bool(r.get("mismatch"))) for r in records if r["ok"] or r.get("mismatch")}
    assert kinds == {("put", False), ("get", False), ("delete", False), ("cas", False), ("cas", True)}, kinds
    assert all(r["expect"] is None for r in records if r["op"] == "cas")
    assert workload.history.counts["unknown"] == 0, workload.history.counts
    assert check_history(records).ok
