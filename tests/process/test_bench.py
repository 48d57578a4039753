"""The benchmark runs end to end in a tiny configuration (no assertion on speed), and
its redis-benchmark runs fail rather than report a fast number when the server errs
or stalls."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from raftproc.ops.bench.redis import (
    BenchmarkFailed,
    Invocation,
    RedisServer,
    RespComparison,
    missing_tools,
    pong,
    resp_comparison,
    run_benchmark,
)

pytestmark = pytest.mark.process

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def test_bench_tiny_run_writes_results_and_plot(tmp_path):
    out, plot = tmp_path / "b.json", tmp_path / "b.svg"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out), "--plot", str(plot)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    (point,) = data["points"]
    assert point["system"] == "raftproc" and point["runs"][0]["ops_per_s"] > 0 and point["runs"][0]["errors"] == 0
    assert {"ops_per_s", "p50_ms", "p99_ms", "p999_ms", "node_cpu_s", "loadgen_cpu_s"} <= set(point["median"])
    assert "<svg" in plot.read_text() and "raftproc, 3 nodes, 64 B" in plot.read_text()
    assert "ops/s" in r.stdout


def need_redis() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH (Debian: redis-tools, redis-server)")


def test_bench_compare_redis_tiny_run_has_every_redis_row(tmp_path):
    need_redis()
    out = tmp_path / "b.json"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--compare", "redis", "--tiny", "--out", str(out), "--plot", str(tmp_path / "b.svg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    resp = json.loads(out.read_text())["resp"]
    rows = {p["system"]: p for p in resp["points"] if p["test"] == "set"}
    assert set(rows) == {"raftproc-resp", "raftproc-resp-follower", "redis-durable", "redis-memory"}
    assert {p["test"] for p in resp["points"]} == {"set", "get"}
    for p in resp["points"]:
        assert p["inflight"] == 16 and p["clients"] * p["pipeline"] == 16
        assert [(run["errors"], run["ops_per_s"] > 0) for run in p["runs"]] == [(0, True)], p
        assert p["median"]["p99_ms"] >= p["median"]["p50_ms"] > 0
    assert all(row["raftproc/redis-durable"] > 0 and row["raftproc/redis-memory"] > 0 for row in resp["ratios"])
    assert "raftproc/redis-durable" in r.stdout and "FAILED" not in r.stdout


def test_an_error_reply_fails_the_run_loudly_not_fast():
    """redis-benchmark stops at the first error reply: that run keeps the error and no
    figure, while the other test on the same server still measures."""
    need_redis()
    comparison = RespComparison(nodes=1, inflights=[4], tests=["set", "incr"], value_size=64, keys=100, repeats=1, warmup=0, window=0.2)
    comparison.makers = {"broken": lambda: RedisServer("redis-broken", durable=False, extra=("--rename-command", "incr", ""))}
    points = {p.test: p for p in resp_comparison(comparison)}
    assert points["set"].failures() == [] and points["set"].median("ops_per_s") > 0
    (reason,) = points["incr"].failures()
    assert "Error from server: ERR unknown command 'INCR'" in reason
    assert points["incr"].runs[0]["errors"] == 1 and math.isnan(points["incr"].median("ops_per_s"))


def test_a_server_that_never_answers_fails_the_run_at_its_timeout():
    """redis-benchmark waits forever on a server that accepts and never replies."""
    need_redis()
    with socket.create_server(("127.0.0.1", 0)) as silent:
        inv = Invocation(silent.getsockname()[:2], "set", 1, 1, 10, 64, 10)
        with pytest.raises(BenchmarkFailed, match="did not finish within 2s"):
            run_benchmark(inv, timeout=2)
        assert not pong(silent.getsockname()[:2], timeout=0.2)
