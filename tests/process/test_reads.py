"""Linearizable reads on real processes: ReadIndex and lease reads against a
leader that was paused and cut off while another took over."""

from __future__ import annotations

import socket

import pytest
from support import wait_until

from raftproc.config import ClusterConfig, NodeAddress
from raftproc.ops.cluster import Cluster
from raftproc.ops.netns import NetnsLab, available
from raftproc.runtime.codec import decode_answer, encode
from raftproc.runtime.framing import FrameDecoder, encode_frame

pytestmark = pytest.mark.process


def test_every_read_mode_reads_the_latest_write(cluster_factory):
    cluster = cluster_factory(3)
    client = cluster.client(timeout=15)
    for i in range(20):
        client.set("k", str(i))
        for mode in ("index", "lease", "log"):
            assert client.get("k", read=mode) == str(i)
    client.close()


@pytest.mark.parametrize("mode", ["index", "lease"])
def test_a_paused_and_cut_off_leader_never_serves_a_stale_read(tmp_path, mode):
    """SIGSTOP the leader and cut it off; another leader commits x=new; resume the
    old one and read from it directly. It must not answer "old": its ReadIndex
    round reaches nobody, and its lease counted the time it was stopped."""
    ok, why = available()
    if not ok:
        pytest.skip(f"partitions need network namespaces: {why}")
    lab = NetnsLab(3)
    lab.setup()
    cfg = ClusterConfig(
        nodes={i: NodeAddress(i, (lab.addr(i), 7100), (lab.addr(i), 7200)) for i in (1, 2, 3)},
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
    )
    cluster = Cluster(tmp_path / "run", launcher=lab.launcher())
    cluster.create(cfg)
    try:
        cluster.up(wait=20)
        client = cluster.client(timeout=15)
        client.set("x", "old")
        old = cluster.wait_for_leader()
        assert client.get("x", read=mode) == "old"
        cluster.pause(old)
        for other in (1, 2, 3):
            if other != old:
                lab.cut(old, other)
                lab.cut(other, old)
        cluster.wait_for_leader(other_than=old, timeout=10)
        client.set("x", "new")
        with socket.create_connection(cfg.nodes[old].client, timeout=10) as s:
            request = {"t": "req", "id": 1, "op": "get", "key": "x", "value": None, "expect": None, "client": 5, "seq": 1, "read": mode}
            s.sendall(encode_frame(encode(request)))
            cluster.resume(old)
            decoder = FrameDecoder()
            answers: list[bytes] = []

            def answered() -> bool:
                data = s.recv(65536)
                assert data, "the old leader closed the connection"
                answers.extend(decoder.feed(data))
                return bool(answers)

            wait_until(answered, 10, "the old leader's answer")
        answer = decode_answer(answers[0])
        # CheckQuorum makes the old leader step down; the read is redirected.
        assert answer["status"] in ("redirect", "no_leader"), answer
        lab.heal_cuts()
        assert client.get("x", read=mode) == "new"
        client.close()
    finally:
        cluster.down(timeout=3)
        lab.teardown()
