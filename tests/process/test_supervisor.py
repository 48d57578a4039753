"""The supervisor script, driven as an operator would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_until
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
        assert "dead" in sup(run, "status").stdout
        cluster.wait_for_leader(other_than=leader)
        sup(run, "start", str(leader))
        follower = next(i for i in (1, 2, 3) if cluster.process(i).state == "running" and i != cluster.wait_for_leader())
        sup(run, "pause", str(follower))
        assert cluster.process(follower).state == "paused"
        assert "paused" in sup(run, "status").stdout
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
