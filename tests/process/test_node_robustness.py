"""A node under bad input: garbage frames, bad start-up conditions, duplicate requests."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys

import cbor2
import pytest
from conftest import log_events
from support import wait_until

from raftproc.runtime.codec import encode
from raftproc.runtime.framing import FrameDecoder, encode_frame

pytestmark = pytest.mark.process

GARBAGE = {
    "random_bytes": bytes(range(256)) * 4,
    "huge_length_prefix": struct.pack(">I", 0xFFFFFFF0) + b"abc",
    "invalid_cbor": encode_frame(b"\xff\xfe\xfd\x1f"),
    "cbor_wrong_shape": encode_frame(cbor2.dumps({"v": 2, "t": "ae", "src": 1})),
    "cbor_not_a_map": encode_frame(cbor2.dumps([1, 2, 3])),
    "half_a_frame": struct.pack(">I", 1000) + b"x" * 10,
}


@pytest.mark.parametrize("port_kind", ["peer", "client"])
def test_node_survives_garbage_and_logs_frame_error(cluster_factory, port_kind):
    cluster = cluster_factory(3)
    target = cluster.wait_for_leader()
    address = getattr(cluster.config.nodes[target], port_kind)
    client = cluster.client(timeout=10)
    for name, blob in GARBAGE.items():
        before = sum(1 for e in log_events(cluster, target) if e["event"] == "frame_error")
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(blob)
            # Bytes that still read as the start of a frame leave the node waiting for
            # the rest; our half-close then ends it mid-frame. Either way the node logs
            # the broken frame and closes this connection only.
            s.shutdown(socket.SHUT_WR)
            try:
                assert s.recv(100) == b"", name
            except ConnectionResetError:
                pass
        wait_until(
            lambda: sum(1 for e in log_events(cluster, target) if e["event"] == "frame_error") > before,
            what=f"frame_error logged for {name}",
        )
        client.set(f"after-{name}", "still serving")
    # The node that took the garbage is still up and answering (a busy CI machine may
    # still move leadership, which is no failure of this test).
    assert cluster.node_status(target)["node"] == target
    assert cluster.process(target).state == "running"
    client.close()


def raw_call(address, body):
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(encode_frame(encode(body)))
        dec = FrameDecoder()
        while True:
            frames = dec.feed(s.recv(65536))
            if frames:
                return cbor2.loads(frames[0])


def test_retry_with_same_sequence_number_is_applied_once(cluster_factory):
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader()
    address = cluster.config.nodes[leader].client
    base = {"t": "req", "client": 4242, "expect": None}
    assert raw_call(address, {**base, "id": 1, "seq": 1, "op": "set", "key": "n", "value": "a"})["status"] == "ok"
    cas = {**base, "id": 2, "seq": 2, "op": "cas", "key": "n", "value": "b", "expect": "a"}
    first = raw_call(address, cas)
    retry = raw_call(address, {**cas, "id": 3})  # the same request again, as after a lost answer
    assert first["result"] == retry["result"] == {"ok": True}
    status_before = cluster.node_status(leader)
    # Applied once: a second application would have been a mismatch, and the value
    # is the one the first application wrote.
    client = cluster.client(timeout=5)
    assert client.get("n") == "b"
    client.close()
    assert status_before["last_index"] >= 4  # both copies reached the log


def run_node(args, cwd, timeout=10):
    return subprocess.run(
        [sys.executable, "-m", "raftproc.node", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_node_startup_errors_are_one_clear_line(tmp_path, cluster_factory):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[[node]\nid=")
    unwritable = tmp_path / "u.toml"
    unwritable.write_text("data_dir = '/dev/null/x'\n[[node]]\nid = 1\npeer = '127.0.0.1:1'\nclient = '127.0.0.1:2'\n")
    cases = [
        (["--id", "9"], "node id 9 is not in the cluster"),
        (["--id", "1", "--config", str(bad_toml)], "not valid TOML"),
        (["--id", "1", "--config", str(tmp_path / "missing.toml")], "does not exist"),
        (["--id", "1", "--config", str(unwritable)], "cannot create data directory"),
    ]
    for args, says in cases:
        r = run_node(args, tmp_path)
        assert r.returncode != 0, args
        assert says in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

    cluster = cluster_factory(3)
    busy = run_node(["--id", "1", "--config", str(cluster.config_path)], tmp_path)
    assert busy.returncode != 0 and "is in use by pid" in busy.stderr and "Traceback" not in busy.stderr
    # Its own data directory, the live node's ports.
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(cluster.config_path.read_text().replace(str(cluster.config.data_dir), str(tmp_path / "other-data")))
    taken = run_node(["--id", "1", "--config", str(elsewhere)], tmp_path)
    assert taken.returncode != 0 and "address already in use" in taken.stderr and "Traceback" not in taken.stderr


def test_sigterm_shuts_down_cleanly(cluster_factory):
    cluster = cluster_factory(3)
    node = cluster.wait_for_leader()
    pid = cluster.process(node).pid
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: cluster.process(node).state == "dead", what="node exits on SIGTERM")
    events = [e["event"] for e in log_events(cluster, node)]
    assert events[-1] == "node_stopped" and "shutdown_requested" in events
    assert cluster.wait_for_leader(other_than=node, timeout=10) != node


def test_corrupt_wal_refuses_to_start(cluster_factory):
    cluster = cluster_factory(3)
    client = cluster.client(timeout=10)
    for i in range(5):
        client.set(f"c{i}", "v")
    client.close()
    victim = next(i for i in cluster.config.nodes if i != cluster.wait_for_leader())
    cluster.stop(victim)
    seg = sorted(cluster.config.node_data_dir(victim).glob("wal-*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[10] ^= 0x01
    seg.write_bytes(bytes(data))
    r = run_node(["--id", str(victim), "--config", str(cluster.config_path)], cluster.run_dir)
    assert r.returncode == 4
    assert "corrupt" in r.stderr and seg.name in r.stderr and "offset" in r.stderr


def test_peer_frames_count_only_after_a_hello_with_the_known_incarnation(cluster_factory):
    from raftproc.core.messages import RequestVote
    from raftproc.runtime.codec import decode_message, encode_message
    from raftproc.runtime.identity import PeerHello, PeerRefused

    cluster = cluster_factory(3)
    target = cluster.wait_for_leader()
    other = next(n for n in (1, 2, 3) if n != target)
    address = cluster.config.nodes[target].peer
    vote = encode_frame(encode_message(RequestVote(src=other, dst=target, term=99, last_log_index=0, last_log_term=0)))
    impostor = encode_frame(encode_message(PeerHello(other, target, 12345)))

    def events(name):
        return [e for e in log_events(cluster, target) if e["event"] == name]

    def answers(blob) -> list:
        """What the node sends back before it closes the connection."""
        frames, dec = [], FrameDecoder()
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(blob)
            try:
                while chunk := s.recv(65536):
                    frames += dec.feed(chunk)
            except ConnectionResetError:
                pass
        return [decode_message(f) for f in frames]

    assert answers(vote) == []
    wait_until(lambda: any("before its hello" in e["error"] for e in events("frame_error")), what="frame_error logged")
    refused = answers(impostor)
    assert len(refused) == 1 and isinstance(refused[0], PeerRefused) and refused[0].dst == other
    assert "came back with other data" in refused[0].reason
    wait_until(lambda: events("peer_refused"), what="peer_refused logged")
    # The vote request never reached the core (it would have moved the node to term 99).
    assert cluster.node_status(target)["term"] < 99
