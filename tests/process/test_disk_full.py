"""A full disk is survived: node 1 leads with its data directory on a small tmpfs
that fills up. Its write stalls (ENOSPC): it logs `disk_full`, answers status and
refuses requests with "disk_full", drops peer messages so another node takes over,
and keeps running; restarted on the full disk it comes up and waits the same way
(no crash loop). Once space returns it writes what it held, catches up and
converges, and every acknowledged write reads back."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import log_events, make_cluster
from support import wait_until

from raftproc.client import Unknown
from raftproc.runtime import codec
from raftproc.runtime.framing import FrameDecoder, encode_frame

pytestmark = pytest.mark.process

ROOM_LEFT = 192 * 1024  # bytes left on the tmpfs once the filler is written
VALUE = "v" * 2000


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _ask_directly(address, body: dict) -> dict:
    import socket

    with socket.create_connection(address, timeout=10) as s:
        s.sendall(encode_frame(codec.encode({**body, "id": 1})))
        decoder = FrameDecoder()
        while True:
            for frame in decoder.feed(s.recv(65536)):
                return codec.decode_answer(frame)


def test_a_full_disk_refuses_writes_keeps_running_and_recovers(tmp_path):
    cluster = make_cluster(tmp_path, 3)
    mount = cluster.config.node_data_dir(1)
    if os.geteuid() != 0 or not _mount_tmpfs(mount, "8m"):
        pytest.skip("needs root to mount a small tmpfs")
    filler = mount / "filler"
    try:
        cluster.up(wait=20)
        client = cluster.client(timeout=10)
        if cluster.wait_for_leader() != 1:
            client.transfer(1)
        acked: dict[str, str] = {}
        st = os.statvfs(mount)
        with open(filler, "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - ROOM_LEFT))
        pid = cluster.process(1).pid

        def disk_full() -> bool:
            s = cluster.node_status(1)
            return bool(s and s["disk_full"])

        # Write until node 1 has hit the wall and another leader has taken writes.
        after_full = 0
        for i in range(5000):
            try:
                client.set(f"k{i}", VALUE)
                acked[f"k{i}"] = VALUE
            except Unknown:
                continue  # its entry may or may not be in; it is not acknowledged
            if disk_full():
                after_full += 1
                if after_full >= 20:
                    break
        print(f"{len(acked)} writes acknowledged, {after_full} after node 1 reported its disk full")
        assert after_full >= 20, f"node 1 never reported a full disk ({len(acked)} writes acknowledged)"
        assert cluster.process(1).state == "running" and cluster.process(1).pid == pid, "node 1 must not die"
        assert any(e["event"] == "disk_full" for e in log_events(cluster, 1))
        assert cluster.wait_for_leader(other_than=1) != 1
        refused = _ask_directly(cluster.config.node(1).client, {"t": "req", "op": "set", "key": "x", "value": "y", "client": 99, "seq": 1})
        assert refused["status"] == "disk_full" and "disk is full" in refused["error"]

        # Restarted on the full disk, it comes up and waits instead of crash-looping.
        cluster.kill(1)
        cluster.start(1)
        wait_until(disk_full, 30, "the restarted node to report its full disk")
        restarted = cluster.process(1).pid
        client.set("while-restarted", "1")
        acked["while-restarted"] = "1"
        assert cluster.process(1).state == "running" and cluster.process(1).pid == restarted

        filler.unlink()
        wait_until(lambda: not disk_full(), 30, "node 1 to write again")
        assert any(e["event"] == "disk_write_resumed" for e in log_events(cluster, 1))
        statuses = cluster.wait_converged(timeout=30)
        assert len({s["log_digest"] for s in statuses}) == 1
        for key, value in acked.items():
            assert client.get(key) == value, f"acknowledged write {key} lost"
        client.close()
    finally:
        cluster.down(timeout=3)
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
