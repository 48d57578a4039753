"""The benchmark runs end to end in a tiny configuration (no assertion on speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
