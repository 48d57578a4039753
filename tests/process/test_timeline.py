"""Raft's story from the real processes: `client set x 10 --trace`, then
`supervisor.py timeline` tells the leader's election and the write's way, in order,
from every node's JSON log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import log_events, make_cluster
from support import wait_until

pytestmark = pytest.mark.process

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "supervisor.py"


def test_timeline_tells_the_election_and_a_traced_write(tmp_path):
    cluster = make_cluster(tmp_path, 3)
    try:
        cluster.up(wait=20)
        cli = [sys.executable, "-m", "raftproc.client", "--config", str(cluster.config_path)]
        assert subprocess.run([*cli, "set", "y", "1"], capture_output=True, timeout=60).returncode == 0  # untraced
        assert subprocess.run([*cli, "set", "x", "10", "--trace"], capture_output=True, timeout=60).returncode == 0
        wait_until(
            lambda: all(any(e["event"] == "trace_applied" for e in log_events(cluster, n)) for n in (1, 2, 3)), 20, "every node to apply"
        )
        leader = cluster.wait_for_leader()
        followers = sorted(n for n in (1, 2, 3) if n != leader)
        out = subprocess.run(
            [sys.executable, str(SCRIPT), "--run-dir", str(cluster.run_dir), "timeline"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        text = "\n".join(lines)

        def at(fragment: str, node: int | None = None) -> int:
            for i, line in enumerate(lines):
                if fragment in line and (node is None or f"node {node} " in line):
                    return i
            raise AssertionError(f"no line with {fragment!r} (node {node}):\n{text}")

        assert "SET y=1" not in text, "only the traced write is told"
        assert at("election timeout", leader) < at("becomes candidate", leader) < at("LEADER of term", leader)
        assert at("votes for node", followers[0]) < at("LEADER of term", leader) or at("votes for node", followers[1]) < at(
            "LEADER of term", leader
        )
        appended = at("client sends SET x=10", leader)
        assert at("LEADER of term") < appended
        for f in followers:
            assert appended < at("with index", leader) < at("appends SET x=10", f) < at("acknowledges", f)
            assert at("COMMITTED", leader) < at("learns index", f) < at("applies SET x=10", f)
        assert min(at("hears node", leader), at("COMMITTED", leader)) == at("hears node", leader), "an acknowledgement before the commit"
        assert at("COMMITTED", leader) < at("applies SET x=10", leader)
    finally:
        cluster.down(timeout=3)
