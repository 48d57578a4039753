"""The node host runs in-process: built by open_host() with an injected clock, a
one-node cluster elects itself and serves writes and reads through its real client
port, driven pass by pass by the test."""

from __future__ import annotations

import threading
import time

from raftproc.client import Client
from raftproc.config import ClusterConfig, NodeAddress
from raftproc.server.host import open_host


def test_host_in_process_with_an_injected_clock_serves_a_client(tmp_path):
    # A clock ten times faster than real time: the host and its loop must take every
    # tick and deadline from it, not from time.monotonic().
    start = time.monotonic()
    fast = lambda: start + (time.monotonic() - start) * 10  # noqa: E731
    cfg = ClusterConfig(nodes={1: NodeAddress(1, ("127.0.0.1", 0), ("127.0.0.1", 0))}, data_dir=tmp_path / "data", log_dir=tmp_path / "logs")
    events: list[str] = []
    host = open_host(cfg, 1, log=lambda event, **fields: events.append(event), clock=fast)
    address = host.clients.listener.sock.getsockname()
    results: dict[str, object] = {}

    def use() -> None:
        client = Client({1: address}, timeout=10)
        try:
            results["set"] = client.set("x", "10")
            results["get"] = client.get("x")
        except Exception as e:  # reported by the assertion below
            results["error"] = e
        finally:
            client.close()

    user = threading.Thread(target=use)
    user.start()
    deadline = time.monotonic() + 20
    while user.is_alive() and time.monotonic() < deadline:
        host.loop.run_once(max_wait=0.01)
    assert not user.is_alive(), "the client did not finish"
    host.close()
    assert results == {"set": {"ok": True}, "get": "10"}, results
    assert "became_leader" in events and "node_stopped" in events
    assert host.raft.log.stable_index >= 2  # the no-op and the write, synced
    assert host._last_tick_at > time.monotonic(), "ticks were taken on the injected clock"
