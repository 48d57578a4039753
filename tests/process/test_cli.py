"""The command line as scripts use it: --endpoints without a config file, JSON
output, and exit codes that tell found from absent, failed from unknown from
unreachable, and a healthy cluster from one with a node down; Ctrl-C ends a
waiting command without a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import make_cluster
from support import wait_until

pytestmark = pytest.mark.process


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftproc.client", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_endpoints_json_and_exit_codes(tmp_path):
    cluster = make_cluster(tmp_path, 3)
    try:
        cluster.up(wait=20)
        endpoints = ",".join(f"{n.client[0]}:{n.client[1]}" for n in cluster.config.nodes.values())
        ep = ["--endpoints", endpoints]
        assert cli(*ep, "set", "x", "10").returncode == 0
        got = cli(*ep, "-w", "json", "get", "x")
        assert got.returncode == 0 and json.loads(got.stdout) == {"key": "x", "found": True, "value": "10"}
        missing = cli(*ep, "get", "nope")
        assert missing.returncode == 4 and missing.stdout == "" and "not found" in missing.stderr
        assert json.loads(cli(*ep, "-w", "json", "get", "nope").stdout)["found"] is False
        assert cli(*ep, "cas", "x", "9", "11").returncode == 1  # a mismatch: failed, not applied
        for k in ("p/2", "p/1", "p/3", "q"):
            assert cli(*ep, "set", k, k.upper()).returncode == 0
        listed = cli(*ep, "get", "--prefix", "p/")
        assert listed.returncode == 0 and listed.stdout.split() == ["p/1", "P/1", "p/2", "P/2", "p/3", "P/3"]
        assert json.loads(cli(*ep, "-w", "json", "get", "--prefix", "p/").stdout)["items"][0] == {"key": "p/1", "value": "P/1"}
        assert cli(*ep, "get", "--prefix", "nothing/").returncode == 4
        paged = cluster.client(timeout=10)
        assert paged.scan("p/", page=2) == [("p/1", "P/1"), ("p/2", "P/2"), ("p/3", "P/3")], "three keys over two pages"
        paged.close()
        status = cli(*ep, "-w", "json", "status")
        body = json.loads(status.stdout)
        assert status.returncode == 0 and body["healthy"] and len(body["nodes"]) == 3
        assert cli(*ep, "health").returncode == 0
        leader = cluster.wait_for_leader()
        moved = cli(*ep, "transfer", str(leader))
        assert moved.returncode == 0 and f"node {leader} leads" in moved.stdout, moved.stderr
        gone = cli(*ep, "member", "remove", "9")
        assert gone.returncode == 1 and "node 9 is not a member" in gone.stderr
        assert "removing node 9" in gone.stderr, "a command that may wait says what it waits for"

        victim = next(n for n in cluster.config.nodes if n != cluster.wait_for_leader())
        cluster.kill(victim)
        assert cli(*ep, "status").returncode == 5
        health = cli(*ep, "health")
        assert health.returncode == 5 and f"nodes [{victim}] do not answer" in health.stderr

        # Nobody listening: unreachable, quickly, and said so.
        dead = cli("--endpoints", "127.0.0.1:1", "--timeout", "1", "set", "y", "1")
        assert dead.returncode == 5 and "UNREACHABLE" in dead.stderr
        assert cli("--endpoints", "not-an-address", "get", "x").returncode == 2

        # Ctrl-C while a command waits (one node up: no leader to accept it; with every
        # node down the command line would say so at once instead of waiting).
        survivor = next(n for n in cluster.config.nodes if n != victim)
        for n in cluster.config.nodes:
            if n not in (victim, survivor):
                cluster.kill(n)
        # A test worker may run with SIGINT ignored, which a child inherits: a shell's
        # Ctrl-C reaches a CLI with the default disposition, so the child gets that.
        waiting = subprocess.Popen(
            [sys.executable, "-m", "raftproc.client", *ep, "--timeout", "60", "set", "z", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        wait_until(lambda: _has_imported(waiting.pid), 20, "the CLI to start")
        waiting.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=20)
        assert waiting.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    finally:
        cluster.down(timeout=3)


def _has_imported(pid: int) -> bool:
    """The process has been running long enough to be inside its retry loop."""
    import psutil

    try:
        return psutil.Process(pid).cpu_times().user > 0.05
    except psutil.Error:
        return False
