"""The supervisor script, driven as an operator would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_until

from raftproc.ops.cluster import Cluster

pytestmark = pytest.mark.process

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "supervisor.py"


def sup(run_dir, *args, check=True):
    r = subprocess.run([sys.executable, str(SCRIPT), "--run-dir", str(run_dir), *args], capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_supervisor_lifecycle(tmp_path):
    run = tmp_path / "run"
    try:
        up = sup(run, "up", "-n", "3", "--base-port", "0", "--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"))
        assert "cluster of 3 up" in up.stdout
        assert sup(run, "up", "-n", "3", check=False).returncode != 0  # one cluster per run dir

        cluster = Cluster(run)
        leader = cluster.wait_for_leader()
        status = sup(run, "status").stdout
        assert status.count("running") == 3 and "leader" in status

        sup(run, "kill", str(leader))
        assert cluster.process(leader).state == "dead"
        down = sup(run, "status", check=False)
        assert down.returncode == 5 and "dead" in down.stdout, "a member that does not answer: exit 5, as the client CLI says"
        cluster.wait_for_leader(other_than=leader)
        sup(run, "start", str(leader))
        follower = next(i for i in (1, 2, 3) if cluster.process(i).state == "running" and i != cluster.wait_for_leader())
        sup(run, "pause", str(follower))
        assert cluster.process(follower).state == "paused"
        paused = sup(run, "status", check=False)
        assert paused.returncode == 5 and "paused" in paused.stdout
        sup(run, "resume", str(follower))
        assert cluster.process(follower).state == "running"
        sup(run, "restart", str(follower))
        wait_until(lambda: cluster.node_status(follower), what="restarted node answers")

        logs = sup(run, "logs", "--event", "became_leader").stdout.splitlines()
        assert logs and all("became_leader" in line for line in logs)
        one = sup(run, "logs", "--node", str(follower)).stdout.splitlines()
        assert one and all(f" n{follower} " in line or f"!n{follower} " in line for line in one)

        # A stale pid file (the process is gone, or the pid is someone else's) is noticed.
        pid_file = run / f"node-{follower}.pid"
        real = pid_file.read_text()
        pid_file.write_text("1\n")
        assert cluster.process(follower).state == "stale-pid"
        pid_file.write_text(real)
    finally:
        sup(run, "down", check=False)
    assert all(p.state in ("stopped",) for p in Cluster(run).processes())


def test_supervisor_membership_survives_down_and_up(tmp_path):
    """join, remove, then `down` and `up`: the cluster comes back with the members it
    has now (the joined node restarts from a log holding configuration entries; the
    removed node stays stopped)."""
    run = tmp_path / "run"
    try:
        sup(run, "up", "-n", "3", "--base-port", "0", "--data-dir", str(tmp_path / "data"), "--log-dir", str(tmp_path / "logs"))
        cluster = Cluster(run)
        assert "node 4 joined: voters [1, 2, 3, 4]" in sup(run, "join").stdout
        assert "voters [2, 3, 4]" in sup(run, "remove", "1").stdout
        client = cluster.client(timeout=10)
        client.set("after-changes", "1")
        client.close()
        sup(run, "down")
        up = sup(run, "up").stdout
        assert "up again" in up and "removed nodes [1] stay stopped" in up
        assert [p.node_id for p in cluster.processes() if p.state == "running"] == [2, 3, 4]
        members = sup(run, "members").stdout
        assert "voters [2, 3, 4], learners []" in members
        client = cluster.client(timeout=10)
        assert client.get("after-changes") == "1"
        client.set("after-restart", "2")
        client.close()
        assert {s["node"] for s in cluster.wait_converged(20)} == {2, 3, 4}
        # `up --fresh` is a new cluster: nobody removed.
        sup(run, "down")
        sup(
            run, "up", "--fresh", "-n", "3", "--base-port", "0", "--data-dir", str(tmp_path / "data2"), "--log-dir", str(tmp_path / "logs2")
        )
        assert [p.node_id for p in cluster.processes() if p.state == "running"] == [1, 2, 3]
    finally:
        sup(run, "down", check=False)


def test_up_refuses_a_bad_node_count_before_writing_anything(tmp_path):
    run = tmp_path / "run"
    r = sup(run, "up", "-n", "0", check=False)
    assert r.returncode != 0 and "1 to 99 nodes" in r.stderr
    assert not (run / "config.toml").exists()


def test_up_on_ports_another_cluster_holds_fails_loudly_and_leaves_it_alone(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    try:
        up = sup(first, "up", "-n", "3", "--base-port", "0")
        assert str(first / "config.toml") in up.stdout, "up names the config to hand to the client"
        assert (first / "data").is_dir() and (first / "logs").is_dir(), "data and logs live in the run directory"
        a = Cluster(first)
        pids = {p.node_id: p.pid for p in a.processes()}
        # The same ports, another run directory (its own data and logs).
        second.mkdir()
        text = (first / "config.toml").read_text().replace(str(first), str(second))
        (second / "config.toml").write_text(text)
        r = sup(second, "up", check=False)
        assert r.returncode != 0, r.stdout
        assert "address already in use" in r.stderr or "another cluster holds these ports" in r.stderr, r.stderr
        assert "leader is node" not in r.stdout
        assert all(p.state == "stopped" for p in Cluster(second).processes()), "what it started, it stopped"
        assert {p.node_id: p.pid for p in a.processes()} == pids and all(p.state == "running" for p in a.processes())
        a.wait_for_leader()
    finally:
        sup(second, "down", check=False)
        sup(first, "down", check=False)


def test_mistakes_get_precise_answers_and_a_down_cluster_fails_fast(tmp_path):
    run = tmp_path / "run"
    try:
        sup(run, "up", "-n", "3", "--base-port", "0")
        for args, says in (
            (["kill", "9"], "node 9 is not in the cluster"),
            (["logs", "--node", "9"], "node 9 is not in the cluster"),
            (["start", "9"], "node 9 is not in the cluster"),
        ):
            r = sup(run, *args, check=False)
            assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        sup(run, "down")
        config_before = (run / "config.toml").read_text()
        for cmd in ("join", "rolling-restart"):
            r = sup(run, cmd, check=False)
            assert r.returncode == 1 and "needs a running cluster" in r.stderr, r.stderr
        assert (run / "config.toml").read_text() == config_before, "a failed join lists no new node"
        assert all(p.state == "stopped" for p in Cluster(run).processes())
    finally:
        sup(run, "down", check=False)


def test_nothing_is_started_twice_or_started_other_than_asked(tmp_path):
    run = tmp_path / "run"
    try:
        sup(run, "up", "-n", "3", "--base-port", "0")
        sup(run, "down")
        for args, says in (
            (["--tls"], "--tls, but the cluster there runs without TLS"),
            (["-n", "5"], "-n 5, but the cluster there has 3 nodes"),
            (["--base-port", "7700"], "--base-port 7700, but node 1 there listens for peers on"),
        ):
            r = sup(run, "up", *args, check=False)
            assert r.returncode == 1 and says in r.stderr and "up --fresh" in r.stderr, (args, r.stderr)
            assert all(p.state == "stopped" for p in Cluster(run).processes()), "refused before starting anything"
        sup(run, "up", "-n", "3")  # what it is: fine
        cluster = Cluster(run)
        live = cluster.process(1).pid
        log_file = cluster.config.node_log_file(1)

        def started_lines() -> int:
            return sum('"node_started"' in line for line in log_file.read_text().splitlines())

        before = started_lines()
        # A second node 1: refused on the data directory's lock before it reads the
        # WAL, binds a port or writes a line of the live node's log.
        second = subprocess.run(
            [sys.executable, "-m", "raftproc.node", "--id", "1", "--config", str(run / "config.toml")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 3 and f"is in use by pid {live}" in second.stderr, second.stderr
        assert started_lines() == before
        # The supervisor lost track of node 1 (its pid file is gone): `start` reports the
        # copy that exited at once, with its code and reason, and tracks the live one again.
        (run / "node-1.pid").unlink()
        r = sup(run, "start", "1", check=False)
        assert r.returncode == 1 and "exited during start-up with code 3" in r.stderr and f"is in use by pid {live}" in r.stderr, r.stderr
        assert f"runs already as pid {live}; tracking it again" in r.stderr
        assert cluster.process(1).pid == live and cluster.process(1).state == "running"
    finally:
        sup(run, "down", check=False)
