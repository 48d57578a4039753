"""Snapshots on real node processes: compaction keeps disk bounded, restarts load
the snapshot, a follower that fell behind catches up through InstallSnapshot
while writes go on, and a kill at any step of taking or installing a snapshot
loses no acknowledged write."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import log_events
from support import wait_until

from raftproc.client import Client, ClientError
from raftproc.ops.cluster import Cluster, ClusterError
from raftproc.ops.layout import local_config

pytestmark = pytest.mark.process

# Small enough that a few hundred writes take several snapshots and roll segments.
SNAPSHOTTING = dict(snapshot_entries=40, segment_bytes=4096, snapshot_chunk_bytes=1024)


def events(cluster: Cluster, node_id: int, name: str) -> list[dict]:
    return [e for e in log_events(cluster, node_id) if e["event"] == name]


def write_keys(client: Client, prefix: str, n: int, acked: dict[str, str]) -> None:
    for i in range(n):
        client.set(f"{prefix}{i}", f"{prefix}-value-{i}")
        acked[f"{prefix}{i}"] = f"{prefix}-value-{i}"


def check_acked(client: Client, acked: dict[str, str]) -> None:
    wrong = {k: client.get(k) for k, v in acked.items() if client.get(k) != v}
    assert not wrong, f"acknowledged writes lost or changed: {dict(list(wrong.items())[:5])}"


def test_snapshots_bound_the_log_and_a_restart_loads_them(cluster_factory):
    cluster = cluster_factory(3, **SNAPSHOTTING)
    client = cluster.client(timeout=15)
    acked: dict[str, str] = {}
    write_keys(client, "k", 400, acked)
    statuses = cluster.wait_converged(timeout=20, state=True)
    for s in statuses:
        # 400 keys make a ~20 KB snapshot, so one is due every ~200 writes (half its size).
        assert s["snapshot_index"] >= 150, s
        assert s["log_entries"] < 300, s  # compacted, not the whole history
        assert s["wal_bytes"] < 20 * 4096, s  # segments behind the older snapshot deleted
    node = statuses[0]["node"]
    cluster.kill(node)
    cluster.start(node)
    statuses = cluster.wait_converged(timeout=20, state=True)
    recovered = events(cluster, node, "wal_recovered")[-1]
    assert recovered["snapshot_index"] >= 150 and recovered["keys"] >= 150  # the rest replays from the WAL
    assert len({s["state_digest"] for s in statuses}) == 1
    check_acked(client, acked)
    client.close()


@pytest.mark.parametrize("background_sync", [False, True])
def test_follower_catches_up_by_install_snapshot_while_writes_continue(cluster_factory, background_sync):
    cluster = cluster_factory(3, background_sync=background_sync, **SNAPSHOTTING)
    client = cluster.client(timeout=15)
    acked: dict[str, str] = {}
    write_keys(client, "a", 20, acked)
    leader = cluster.wait_for_leader()
    behind = next(i for i in cluster.config.nodes if i != leader)
    cluster.kill(behind)
    write_keys(client, "b", 300, acked)  # the leader compacts far past what `behind` holds

    stop = threading.Event()
    background: dict[str, str] = {}
    errors: list[Exception] = []

    def writer() -> None:
        c = cluster.client(timeout=15)
        deadline = time.monotonic() + 30
        i = 0
        while not stop.is_set() and time.monotonic() < deadline and i < 5000:
            try:
                c.set(f"c{i}", str(i))
                background[f"c{i}"] = str(i)
            except ClientError as e:
                errors.append(e)
            i += 1
        c.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        cluster.start(behind)
        wait_until(lambda: events(cluster, behind, "snapshot_installed"), 20, "the follower to install a snapshot")
        wait_until(lambda: len(background) > 100, 20, "writes after the install")
    finally:
        stop.set()
        t.join()
    assert not errors
    statuses = cluster.wait_converged(timeout=20, state=True)
    assert len(statuses) == 3 and len({s["state_digest"] for s in statuses}) == 1
    sent = [e for n in cluster.config.nodes for e in events(cluster, n, "snapshot_send_finished") if e["success"]]
    assert sent, "no completed snapshot transfer logged by any leader"
    check_acked(client, acked | background)
    client.close()


LOCAL_STEPS = ["snapshot_written", "snapshot_synced", "snapshot_renamed", "snapshot_dir_synced", "wal_compacted"]


@pytest.mark.parametrize("step", LOCAL_STEPS + ["snapshot_install_renamed"])
def test_kill_at_each_snapshot_step_loses_nothing(tmp_path, monkeypatch, step):
    fired = tmp_path / "fired"
    monkeypatch.setenv("RAFTPROC_TEST_FAILPOINT", step)
    monkeypatch.setenv("RAFTPROC_TEST_FAILPOINT_FIRED", str(fired))
    launcher = [sys.executable, str(Path(__file__).parent / "launchers" / "crash_at_failpoint.py")]
    cluster = Cluster(tmp_path / "run", launcher=launcher)
    cluster.create(local_config(3, tmp_path / "run" / "data", tmp_path / "run" / "logs", **SNAPSHOTTING))
    try:
        cluster.up(wait=20)
        client = cluster.client(timeout=15)
        acked: dict[str, str] = {}
        if step == "snapshot_install_renamed":
            leader = cluster.wait_for_leader()
            behind = next(i for i in cluster.config.nodes if i != leader)
            cluster.kill(behind)
            write_keys(client, "k", 200, acked)
            try:
                cluster.start(behind)
            except ClusterError:
                # The snapshot it was sent at once may reach the failpoint before the
                # start-up wait saw it answer: the crash this case is for, come early.
                assert fired.exists(), "node exited during start-up, not at the failpoint"
        write_keys(client, "m", 200, acked)
        wait_until(fired.exists, 20, f"a node to die at {step}")
        victim = int(fired.read_text())
        wait_until(lambda: cluster.node_status(victim) is None, 10, "the victim to be gone")
        write_keys(client, "n", 50, acked)
        cluster.start(victim)
        statuses = cluster.wait_converged(timeout=30, state=True)
        assert len(statuses) == 3 and len({s["state_digest"] for s in statuses}) == 1
        check_acked(client, acked)
        client.close()
        assert events(cluster, victim, "wal_recovered")[-1]["keys"] >= 0
    finally:
        cluster.down(timeout=3)


def test_corrupt_newest_snapshot_is_reported_and_the_older_one_used(cluster_factory):
    cluster = cluster_factory(3, **SNAPSHOTTING)
    client = cluster.client(timeout=15)
    acked: dict[str, str] = {}
    write_keys(client, "k", 600, acked)
    leader = cluster.wait_for_leader()
    victim = next(i for i in cluster.config.nodes if i != leader)
    cluster.wait_converged(timeout=20, state=True)
    data_dir = cluster.config.node_data_dir(victim)
    wait_until(lambda: len(list(data_dir.glob("snap-*.snap"))) == 2, 10, "two snapshots on the victim")
    cluster.stop(victim)
    newest = max(data_dir.glob("snap-*.snap"))
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    newest.write_bytes(bytes(raw))
    write_keys(client, "after", 20, acked)
    cluster.start(victim)
    statuses = cluster.wait_converged(timeout=20, state=True)
    assert len(statuses) == 3 and len({s["state_digest"] for s in statuses}) == 1
    corrupt = events(cluster, victim, "snapshot_corrupt")
    assert corrupt and corrupt[-1]["file"] == newest.name
    assert events(cluster, victim, "wal_recovered")[-1]["snapshot_index"] < int(newest.name.split("-")[1])
    check_acked(client, acked)
    client.close()
