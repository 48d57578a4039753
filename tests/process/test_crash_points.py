"""Crashes at the edges of the fsync: acknowledged writes survive."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from conftest import log_events

from raftproc.ops.cluster import Cluster
from raftproc.ops.layout import local_config
from raftproc.runtime.codec import decode_answer, encode
from raftproc.runtime.framing import FrameDecoder, encode_frame

pytestmark = pytest.mark.process

LAUNCHER = [sys.executable, str(Path(__file__).parent / "launchers" / "crash_after_fsync.py")]


@pytest.mark.parametrize("background_sync", [False, True])
def test_leader_killed_after_fsync_before_replying_loses_no_acknowledged_write(tmp_path, monkeypatch, background_sync):
    monkeypatch.setenv("RAFTPROC_TEST_CRASH_MARKER", "CRASH-HERE")
    who = tmp_path / "crash-node"
    who.write_text("none")
    monkeypatch.setenv("RAFTPROC_TEST_CRASH_FILE", str(who))
    cluster = Cluster(tmp_path / "run", launcher=LAUNCHER)
    cluster.create(local_config(3, tmp_path / "run" / "data", tmp_path / "run" / "logs", background_sync=background_sync))
    try:
        cluster.up(wait=20)
        client = cluster.client(timeout=15)
        acked = {f"a{i}": str(i) for i in range(20)}
        for k, v in acked.items():
            client.set(k, v)
        leader = cluster.wait_for_leader()
        before = cluster.node_status(leader)["last_index"]
        who.write_text(str(leader))

        # One raw request, never retried: the leader sends it to its followers
        # (before its own fsync, Raft thesis 10.2.1), fsyncs it, and dies before it
        # answers. Followers that got it may commit it; nobody acknowledged it.
        # With background sync the leader does not wait for its own fsync to count the
        # followers' acknowledgements, so on a loaded machine the two followers may
        # commit it and the leader answer before its sync thread finishes: then the
        # write was acknowledged, and must survive like any other.
        with socket.create_connection(cluster.config.nodes[leader].client, timeout=5) as s:
            s.sendall(
                encode_frame(
                    encode({"t": "req", "id": 1, "client": 99, "seq": 1, "op": "set", "key": "m", "value": "CRASH-HERE", "expect": None})
                )
            )
            answers = []
            try:
                answers = FrameDecoder().feed(s.recv(4096))
            except ConnectionResetError:
                pass
        if answers:
            assert background_sync, "with an inline fsync the leader dies before it can count any acknowledgement"
            assert decode_answer(answers[0])["status"] == "ok"
            acked["m"] = "CRASH-HERE"
        new = cluster.wait_for_leader(other_than=leader, timeout=15)
        for i in range(20, 30):
            client.set(f"a{i}", str(i))
            acked[f"a{i}"] = str(i)

        who.write_text("none")
        cluster.start(leader)
        statuses = cluster.wait_converged(timeout=20)
        assert len(statuses) == 3 and new != leader, (cluster.processes(), cluster.last_output(leader))
        for k, v in acked.items():
            assert client.get(k) == v
        client.close()
        # The restarted node found the fsynced (never acknowledged) entry in its WAL.
        recovered = [e for e in log_events(cluster, leader) if e["event"] == "wal_recovered"]
        assert recovered[-1]["entries"] >= before + 1
    finally:
        cluster.down(timeout=3)
