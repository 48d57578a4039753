"""The node host runs in-process: built by open_host() with an injected clock, a
one-node cluster elects itself and serves writes and reads through its real client
port, driven pass by pass by the test."""

from __future__ import annotations

import errno
import socket
import threading
import time

from support import run_loop_until

from raftproc.client import Client, Failed
from raftproc.config import ClusterConfig, NodeAddress
from raftproc.server.host import open_host


def test_host_in_process_with_an_injected_clock_serves_a_client(tmp_path):
    # A clock ten times faster than real time: the host and its loop must take every
    # tick and deadline from it, not from time.monotonic().
    start = time.monotonic()
    fast = lambda: start + (time.monotonic() - start) * 10  # noqa: E731
    cfg = ClusterConfig(
        nodes={1: NodeAddress(1, ("127.0.0.1", 0), ("127.0.0.1", 0))}, data_dir=tmp_path / "data", log_dir=tmp_path / "logs"
    )
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
    assert host.rooms.ticker.last_tick_at > time.monotonic(), "ticks were taken on the injected clock"


def _serve(host, until, timeout=20.0):
    return run_loop_until(host.loop, until, timeout)


def _one_node(tmp_path, **overrides):
    cfg = ClusterConfig(
        nodes={1: NodeAddress(1, ("127.0.0.1", 0), ("127.0.0.1", 0))}, data_dir=tmp_path / "data", log_dir=tmp_path / "logs", **overrides
    )
    events: list[tuple[str, dict]] = []
    host = open_host(cfg, 1, log=lambda event, **fields: events.append((event, fields)))
    assert _serve(host, lambda: host.raft.role == "leader")
    return host, host.clients.listener.sock.getsockname(), events


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_host_refuses_a_request_over_max_request_bytes_with_a_clear_error(tmp_path):
    host, address, _ = _one_node(tmp_path, max_request_bytes=64 * 1024)
    results: dict[str, object] = {}

    def use() -> None:
        client = Client({1: address}, timeout=5)
        try:
            client.set("big", "x" * 100_000)
        except Failed as e:
            results["error"] = str(e)
        results["small"] = client.set("small", "y")
        client.close()

    user = threading.Thread(target=use)
    user.start()
    _serve(host, lambda: not user.is_alive())
    host.close()
    assert "over the limit of 65536" in results["error"] and results["small"] == {"ok": True}


def test_host_closes_connections_past_max_clients_and_idle_ones(tmp_path):
    host, address, events = _one_node(tmp_path, max_clients=2, idle_timeout_ms=300)
    socks = [socket.create_connection(address) for _ in range(3)]
    assert _serve(host, lambda: host.clients.refused_clients == 1)
    assert len(host.clients.connections) == 2
    socks[0].sendall(b"\x00")  # one byte of a frame header, then nothing
    assert _serve(host, lambda: all(_closed_by_peer(s) for s in socks), timeout=10), "idle connections stay open"
    host.close()
    assert any(e == "client_refused" for e, _ in events) and any(e == "connection_idle_closed" for e, _ in events)
    for s in socks:
        s.close()


def test_a_connection_that_never_completes_a_first_frame_is_closed_before_the_idle_timeout(tmp_path):
    host, address, events = _one_node(tmp_path, handshake_timeout_ms=300, idle_timeout_ms=600_000)
    silent = socket.create_connection(address)
    silent.sendall(b"\x00")  # one byte of a frame header, then nothing
    talker = Client({1: address}, timeout=5)
    results: dict[str, object] = {}
    user = threading.Thread(target=lambda: results.update(status=talker.status(1)))
    user.start()
    assert _serve(host, lambda: not user.is_alive() and _closed_by_peer(silent), timeout=10), "the silent connection stays open"
    assert results["status"]["role"] == "leader"
    assert len(host.clients.connections) == 1, "the connection that spoke stays: the idle timeout is ten minutes"
    talker.close()
    host.close()
    silent.close()


def test_a_snapshot_that_finishes_while_the_disk_is_full_waits_for_the_thaw(tmp_path):
    """The snapshot thread may finish while the driver holds a Ready stalled on a full
    disk. Compacting the core then would step it mid-Ready (a RuntimeError that ends
    the node); the compaction waits until the write went through."""
    release = threading.Event()
    host, address, events = _one_node(tmp_path, snapshot_entries=5, snapshot_bytes=1)
    real_write_snapshot = host.snapshots.write_file

    def held_write_snapshot(*args, **kwargs):
        assert release.wait(30), "the test never released the snapshot writer"
        return real_write_snapshot(*args, **kwargs)

    host.snapshots.write_file = held_write_snapshot
    client = Client({1: address}, timeout=30)
    done: dict[str, object] = {}
    writer = threading.Thread(target=lambda: done.update(first=[client.set(f"k{i}", "v") for i in range(6)]))
    writer.start()
    assert _serve(host, lambda: host.snapshots._job is not None), "no snapshot was started"
    assert _serve(host, lambda: not writer.is_alive())

    class FullDisk:
        """The WAL with a full disk under it (the driver's storage, swapped: a
        compiled WAL's methods cannot be patched)."""

        def __init__(self, wal):
            self.wal = wal

        def write(self, rd):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.wal, name)

    host.driver.storage = FullDisk(host.wal)
    blocked = threading.Thread(target=lambda: done.update(blocked=client.set("during", "v")))
    blocked.start()
    assert _serve(host, lambda: host.driver.stalled is not None), "the disk never filled"
    release.set()
    assert _serve(host, lambda: not host.snapshots._job.is_alive()), "the snapshot writer did not finish"
    for _ in range(20):
        host.loop.run_once(max_wait=0.01)  # the waker fires here: it must not compact mid-Ready
    assert host.raft.log.snapshot_index == 0, "compacted while the core was mid-Ready"
    host.driver.storage = host.wal
    assert _serve(host, lambda: not blocked.is_alive()), "the write did not go through after the disk had room"
    assert _serve(host, lambda: host.raft.log.snapshot_index > 0), "the snapshot was never taken into account"
    client.close()
    host.close()
    assert done["blocked"] == {"ok": True}
    assert any(e == "snapshot_saved" for e, _ in events)
