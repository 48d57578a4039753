"""Chaos: the smoke run CI does, and proof that the verdicts can fail."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from raftproc.checker import check_history
from raftproc.ops.chaos import ChaosOptions, lost_writes, run_chaos
from raftproc.ops.cluster import Cluster, local_config
from raftproc.ops.nemesis import plan
from raftproc.ops.netns import available
from raftproc.ops.workload import History, run_one
from raftproc.runtime.wal import POWER_LOSS_ENV

pytestmark = pytest.mark.process

NO_FSYNC = [sys.executable, str(Path(__file__).with_name("no_fsync_node.py"))]


def test_chaos_same_seed_same_schedule():
    kinds = ["kill", "pause", "power", "partition"]
    assert plan(5, kinds, 60) == plan(5, kinds, 60)
    assert plan(5, kinds, 60) != plan(6, kinds, 60)
    assert {f.kind for f in plan(5, kinds, 300)} == set(kinds)


def test_chaos_smoke_every_verdict_passes(tmp_path):
    faults = ["kill", "pause", "power", "stop", "transfer"]
    root_ok, why = available()
    if root_ok:
        faults += ["partition", "slow"]
    out = tmp_path / "run"
    # A snapshot every 100 entries: snapshots, compaction and InstallSnapshot all
    # happen while nodes are killed, paused, cut off and power-cycled.
    result = run_chaos(
        ChaosOptions(out=out, nodes=3, duration=20, faults=faults, clients=4, seed=11, snapshot_every=100), say=lambda m: None
    )
    assert result.ok, result.verdicts
    names = {name for name, _, _ in result.verdicts}
    assert names == {"converged", "linearizable", "no acknowledged write lost", "storage recovers cleanly"}
    summary = dict(result.summary)
    assert summary["operations ok"] > 100 and summary["faults injected"] >= 3
    assert summary["snapshots taken"] >= 3 * 3, summary
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert {"client", "op", "key", "value", "expect", "call", "return", "ok", "output"} <= set(history[0])
    report = (out / "report.html").read_text()
    assert "<svg" in report and "linearizable" in report and "leads term" in report
    assert (out / "logs" / "node-1.jsonl").exists()
    if not root_ok:
        assert any("unavailable" in n for n in result.notes)


def power_cut_everything(tmp_path: Path, launcher, background_sync=False):
    """Acknowledged writes, then every node loses power at once, then restart."""
    run = tmp_path / "run"
    cluster = Cluster(run, launcher=launcher, env={POWER_LOSS_ENV: "1"})
    cfg = cluster.create(local_config(3, run / "data", run / "logs", background_sync=background_sync))
    history = History()
    try:
        cluster.up(wait=20)
        client = cluster.client(timeout=10)
        for i in range(10):
            record = run_one(client, history, 0, "put", f"k{i}", f"v{i}")
            assert record["ok"] is True
        for n in cfg.nodes:
            cluster.kill(n)
        for n in cfg.nodes:
            cluster.start(n)
        cluster.wait_for_leader(timeout=20)
        for i in range(10):
            run_one(client, history, 1, "get", f"k{i}")
        client.close()
    finally:
        cluster.down(timeout=3)
    records = sorted(history.records, key=lambda r: r["call"])
    return records, lost_writes(records, 1), check_history(records)


@pytest.mark.parametrize("background_sync", [False, True])
def test_power_loss_of_the_whole_cluster_loses_nothing_acknowledged(tmp_path, background_sync):
    records, lost, verdict = power_cut_everything(tmp_path, None, background_sync)
    assert lost == [] and verdict.ok, (lost, verdict.summary())


def test_planted_missing_fsync_loses_acknowledged_writes_under_power_loss(tmp_path):
    records, lost, verdict = power_cut_everything(tmp_path, NO_FSYNC)
    assert lost, "the planted missing fsync should lose acknowledged writes"
    assert not verdict.ok
    assert "NOT linearizable" in verdict.summary()
