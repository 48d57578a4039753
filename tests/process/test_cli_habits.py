"""The command line as etcdctl and redis-cli users reach for it, on real nodes:
a value piped in comes back byte for byte, flags follow the command, status finds
a member added after the endpoints were written down, and a plaintext dial of a
TLS cluster is named at once."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.process

RAW = b"\xff\xfe\x00\x80 not UTF-8\n"


def cli(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftproc.client", *args], input=stdin, capture_output=True, timeout=timeout)


def _endpoints(cluster) -> list[str]:
    return ["--endpoints", ",".join(f"{n.client[0]}:{n.client[1]}" for n in cluster.config.nodes.values())]


def test_piped_bytes_come_back_raw_and_status_finds_a_member_added_later(cluster_factory):
    cluster = cluster_factory(3)
    ep = _endpoints(cluster)  # written down before node 4 exists
    piped = cli("set", "blob", *ep, stdin=RAW)
    assert piped.returncode == 0, piped.stderr
    got = cli("get", "blob", *ep)
    assert got.returncode == 0 and got.stdout == RAW and b"Traceback" not in got.stderr
    as_json = json.loads(cli("get", "blob", "-w", "json", *ep).stdout)
    assert base64.b64decode(as_json["value_base64"]) == RAW
    assert cli("set", "text", *ep, stdin=b"hello\n").returncode == 0
    assert json.loads(cli(*ep, "get", "text", "-w", "json").stdout)["value"] == "hello\n"

    assert cluster.join() == 4
    status = cli(*ep, "status", "-w", "json")
    nodes = sorted(row["node"] for row in json.loads(status.stdout)["nodes"])
    assert status.returncode == 0 and nodes == [1, 2, 3, 4], status.stderr
    cluster.kill(4)
    down = cli(*ep, "health")
    assert down.returncode == 5 and b"[4] do not answer" in down.stderr


def test_a_tls_cluster_dialled_in_plaintext_is_named_at_once(cluster_factory):
    cluster = cluster_factory(3, tls=True)
    started = time.monotonic()
    plain = cli(*_endpoints(cluster), "--timeout", "30", "set", "k", "v")
    assert plain.returncode == 2 and b"is it a TLS cluster" in plain.stderr, plain.stderr
    assert time.monotonic() - started < 15, "named at once, not after the 30 s deadline"
    read = cli(*_endpoints(cluster), "--timeout", "30", "get", "k")
    assert read.returncode == 2 and b"UNKNOWN" not in read.stderr
