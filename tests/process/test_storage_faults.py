"""Faults outside Raft's model of storage (docs/storage.md): a node that comes back
with an older copy of its data cannot be stopped from losing acknowledged writes
while every node that saw them is down, but the loss must not be silent."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import make_cluster
from support import wait_until

from raftproc.ops.cluster import ClusterError
from raftproc.ops.corrupt import corrupt_wal

pytestmark = pytest.mark.process


SUPERVISOR = Path(__file__).resolve().parents[2] / "scripts" / "supervisor.py"


def metrics(cluster, node: int) -> str:
    host, port = cluster.config.node(node).metrics
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def health(cluster, node: int) -> tuple[int, dict]:
    host, port = cluster.config.node(node).metrics
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("same_term", [False, True], ids=["later-term", "same-term"])
def test_a_node_restored_from_an_old_copy_loses_writes_loudly_never_silently(tmp_path, same_term):
    """5 nodes; two followers stopped; 100 writes acknowledged by the other three; all
    stopped; one of the three put back to a copy of its data from before the writes;
    it and the two old followers start and elect a leader without the writes, which
    takes a new write. When the two nodes holding the writes return, the histories
    are told apart at the first exchange: every log is kept (the evidence), a node
    that met a contradicting leader follows nobody, and both sides raise the alarm
    (status, /health 503, an error line).

    same-term: a leadership transfer after the copy puts the writes in a term the
    restored node never saw, so the other side elects a leader for that same term
    (the restored node forgot its vote): terms alone cannot tell the histories apart,
    the log's chain links do. later-term: the other side's leader contradicts
    entries the returning nodes know are committed."""
    cluster = make_cluster(tmp_path, 5, log_level="info")
    try:
        cluster.up(wait=30)
        client = cluster.client(timeout=30)
        client.set("before", "1")
        cluster.wait_converged(timeout=30)
        leader = cluster.wait_for_leader(timeout=30)
        away1, away2, restored, keeper = [n for n in range(1, 6) if n != leader]
        cluster.stop(away1)
        cluster.stop(away2)
        cluster.stop(restored)
        backup = tmp_path / "backup"
        shutil.copytree(cluster.config.node_data_dir(restored), backup)
        cluster.start(restored)
        if same_term:
            leader = cluster.transfer(keeper)
            keeper = next(n for n in range(1, 6) if n not in (leader, away1, away2, restored))
        for i in range(100):
            client.set(f"acked{i}", "v")  # acknowledged by leader, keeper and restored: 3 of 5
        client.close()
        holders = {n: cluster.node_status(n) for n in (leader, keeper)}
        assert all(s["last_applied"] >= holders[leader]["commit_index"] - 5 for s in holders.values() if s)
        cluster.down()

        shutil.rmtree(cluster.config.node_data_dir(restored))
        shutil.copytree(backup, cluster.config.node_data_dir(restored))
        for n in (restored, away1, away2):
            cluster.start(n)
        other_side = cluster.client(timeout=30)
        other_side.set("after", "on the side without the writes")
        assert other_side.get("acked0") is None, "the writes are gone from this side: Raft cannot prevent that"
        other_side.close()
        b_leader = cluster.wait_for_leader(timeout=30)

        holders_side, other = (leader, keeper), (restored, away1, away2)
        before_return = {n: cluster.node_status(n) for n in other}
        for n in holders_side:
            cluster.start(n)
        seen: list[dict] = []

        def alarmed():
            """Whichever side leads after they meet, both sides must know: the node that
            met a contradicting leader, and that leader, each raise the alarm."""
            statuses = {n: cluster.node_status(n) for n in range(1, 6)}
            seen[:] = [statuses]
            on = {n for n, st in statuses.items() if st and st["diverged"]}
            return statuses if on & set(holders_side) and on & set(other) else None

        try:
            statuses = wait_until(alarmed, 60, "the divergence alarm on both sides")
        except AssertionError:
            brief = {
                n: s and {k: s[k] for k in ("role", "term", "leader", "commit_index", "last_index", "diverged")} for n, s in seen[0].items()
            }
            raise AssertionError(f"holders {holders_side}; other side {other} led by {b_leader}: {brief}") from None
        for n in holders_side:
            assert statuses[n]["last_index"] >= holders[n]["last_index"], "the acknowledged writes are kept as evidence"
        for n in other:
            assert statuses[n]["last_index"] >= before_return[n]["last_index"], "and so is the other side's history"
        for n, st in statuses.items():
            code, body = health(cluster, n)
            if st["diverged"]:
                assert code == 503 and ("diverged" in body["reason"] or "differs" in body["reason"]), body
                assert 'raftproc_log_diverged{node="%d"} 1.0' % n in metrics(cluster, n)
        # The operator's two views say so too, with exit codes a script can act on.
        sup = subprocess.run(
            [sys.executable, str(SUPERVISOR), "--run-dir", str(cluster.run_dir), "status"], capture_output=True, text=True, timeout=60
        )
        assert sup.returncode == 6 and "ALARM node" in sup.stdout, sup.stdout
        cli = subprocess.run(
            [sys.executable, "-m", "raftproc.client", "--config", str(cluster.config_path), "status"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 6 and "DIVERGED HISTORIES" in cli.stderr, (cli.stdout, cli.stderr)
        # The alarm outlives a restart: the node would otherwise vote on its history again.
        follower_side = next(n for n, st in statuses.items() if (st["diverged"] or "").startswith("log diverged"))
        cluster.restart(follower_side)
        again = wait_until(lambda: cluster.node_status(follower_side), 20, "the restarted node to answer")
        assert again["diverged"] == statuses[follower_side]["diverged"] and again["leader"] is None
        lines = [
            json.loads(x) for n in range(1, 6) for x in cluster.config.node_log_file(n).read_text().splitlines() if '"log_diverged"' in x
        ]
        assert lines and all(line["level"] == "error" and {"index", "leader", "local_term"} <= set(line) for line in lines)
    finally:
        cluster.down(timeout=3)


def test_a_corrupt_wal_refuses_to_start_and_rebuild_brings_the_node_back(tmp_path):
    """A flipped bit in a follower's WAL: it refuses to start and `start` says why. The
    way back is `rebuild` (remove, wipe, add back), refused while the removal would
    leave too few voters; once done the node caught up from a snapshot and votes."""
    cluster = make_cluster(tmp_path, 3, log_level="info", snapshot_entries=50)
    try:
        cluster.up(wait=30)
        client = cluster.client(timeout=30)
        for i in range(200):
            client.set(f"k{i}", str(i))
        leader = cluster.wait_for_leader(timeout=30)
        victim, other = [n for n in (1, 2, 3) if n != leader]
        cluster.stop(victim)
        done = corrupt_wal(cluster.config.node_data_dir(victim), random.Random(7))
        with pytest.raises(ClusterError, match="exited during start-up with code 4") as err:
            cluster.start(victim, wait=30)
        assert "corrupt" in str(err.value), err.value
        corrupted = sorted(p.name for p in cluster.config.node_data_dir(victim).iterdir())

        cluster.stop(other)
        with pytest.raises(ClusterError, match="quorum|leader"):
            cluster.rebuild(victim, timeout=10)
        assert sorted(p.name for p in cluster.config.node_data_dir(victim).iterdir()) == corrupted, "refused: nothing touched"
        cluster.start(other)

        result = cluster.rebuild(victim)
        assert victim in result["membership"]["voters"], (done, result)
        client.set("after", "rebuilt")
        statuses = cluster.wait_converged(timeout=30, state=True)
        assert len(statuses) == 3 and len({s["state_digest"] for s in statuses}) == 1
        events = [json.loads(x)["event"] for x in cluster.config.node_log_file(victim).read_text().splitlines()]
        assert "snapshot_installed" in events, "it caught up from a snapshot"
        client.close()
    finally:
        cluster.down(timeout=3)


def test_a_follower_whose_log_went_backwards_under_a_live_leader_is_alarmed(tmp_path):
    """A follower acknowledged writes, then came back from an older copy of its data
    while the leader stayed up. The leader remembers what it acknowledged; when the
    follower refuses an index it acknowledged, its log went backwards: the leader
    raises the alarm instead of waiting on it forever."""
    cluster = make_cluster(tmp_path, 3, log_level="info")
    try:
        cluster.up(wait=30)
        client = cluster.client(timeout=30)
        client.set("before", "1")
        cluster.wait_converged(timeout=30)
        leader = cluster.wait_for_leader(timeout=30)
        follower = next(n for n in (1, 2, 3) if n != leader)
        cluster.stop(follower)
        backup = tmp_path / "backup"
        shutil.copytree(cluster.config.node_data_dir(follower), backup)
        cluster.start(follower)
        for i in range(50):
            client.set(f"acked{i}", "v")
        wait_until(
            lambda: (s := cluster.node_status(follower)) and s["last_index"] >= cluster.node_status(leader)["commit_index"],
            30,
            "the follower to hold every write",
        )
        cluster.stop(follower)
        shutil.rmtree(cluster.config.node_data_dir(follower))
        shutil.copytree(backup, cluster.config.node_data_dir(follower))
        cluster.start(follower)
        status = wait_until(lambda: (s := cluster.node_status(leader)) and s["diverged"] and s, 30, "the leader's alarm")
        assert f"node {follower}" in status["diverged"]
        lines = [json.loads(x) for x in cluster.config.node_log_file(leader).read_text().splitlines() if '"peer_log_regressed"' in x]
        assert lines and lines[0]["peer"] == follower and lines[0]["level"] == "error"
        assert cluster.wait_for_leader(timeout=10) == leader, "the others go on"
        client.set("after", "still writable")
        client.close()
    finally:
        cluster.down(timeout=3)
