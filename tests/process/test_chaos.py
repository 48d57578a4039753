"""Chaos: the smoke run CI does, and proof that the verdicts can fail."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis

from raftproc.checker import check_history
from raftproc.ops.chaos import ChaosOptions, lost_writes, run_chaos, settled_configuration
from raftproc.ops.cluster import Cluster
from raftproc.ops.layout import local_config
from raftproc.ops.nemesis import plan
from raftproc.ops.netns import available
from raftproc.ops.replay import Recording, newest_recording
from raftproc.ops.workload import History, run_one
from raftproc.runtime.wal import POWER_LOSS_ENV

pytestmark = pytest.mark.process

NO_FSYNC = [sys.executable, str(Path(__file__).parent / "launchers" / "no_fsync_node.py")]


def test_chaos_same_seed_same_schedule():
    kinds = ["kill", "pause", "power", "partition"]
    assert plan(5, kinds, 60) == plan(5, kinds, 60)
    assert plan(5, kinds, 60) != plan(6, kinds, 60)
    assert {f.kind for f in plan(5, kinds, 300)} == set(kinds)


def test_chaos_smoke_every_verdict_passes(tmp_path, capsys):
    faults = ["kill", "pause", "power", "stop", "transfer", "corrupt", "clock"]
    root_ok, why = available()
    if root_ok:
        faults += ["partition", "slow"]
    out = tmp_path / "run"
    # A snapshot every 100 entries: snapshots, compaction and InstallSnapshot all
    # happen while nodes are killed, paused, cut off and power-cycled; and every
    # connection, nodes' and clients', runs mutual TLS.
    result = run_chaos(
        ChaosOptions(out=out, nodes=3, duration=24, faults=faults, clients=4, seed=385, snapshot_every=100, tls=True, read_mode="lease"),
        say=lambda m: None,
    )
    assert result.ok, result.verdicts
    names = {name for name, _, _ in result.verdicts}
    assert names == {
        "converged",
        "one settled configuration",
        "linearizable",
        "no acknowledged write lost",
        "storage recovers cleanly",
        "no history diverged",
        "corrupt storage refused",
    }
    # Seed 385 draws a corrupt WAL (refused, then rebuilt) and skewed clocks under lease reads.
    ran = {f["kind"]: f for f in json.loads((out / "faults.json").read_text()) if not f["skipped"]}
    assert "refused to start" in ran["corrupt"]["detail"] and "x" in ran["clock"]["detail"], ran
    summary = dict(result.summary)
    assert summary["operations ok"] > 100 and summary["faults injected"] >= 3
    assert summary["snapshots taken"] >= 3 * 3, summary
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert {"client", "op", "key", "value", "expect", "call", "return", "ok", "output"} <= set(history[0])
    report = (out / "report.html").read_text()
    # The picture is drawn (matplotlib is in the test extra) and the leaders table has rows;
    # how the picture looks is checked in a browser by tests/unit/test_pictures.py.
    assert report.count("<svg") == 1 and "linearizable" in report and "<td>node " in report.split('id="leaders"')[1]
    # The run is recorded for the live page's replay, which the report names; the
    # recording holds the leaders and the nemesis's faults.
    assert f"web --replay {out}" in report
    recording = Recording(newest_recording(out))
    kinds = {m["kind"] for m in recording.markers}
    assert {"leader", "action"} <= kinds, kinds
    assert recording.end - recording.start >= 15
    started = [e for e in map(json.loads, (out / "logs" / "node-1.jsonl").read_text().splitlines()) if e["event"] == "node_started"]
    assert started and all(e["transport"] == "tls" for e in started)
    if not root_ok:
        assert any("unavailable" in n for n in result.notes)
    printed = capsys.readouterr().out
    assert "ops ok" in printed and "\r" not in printed, "progress into a pipe is plain lines"


def test_chaos_member_faults_every_verdict_passes(tmp_path):
    """Nodes removed (the leader too) and added back with their data, a node
    replaced by a new one, with a kill in between, while clients write and read."""
    out = tmp_path / "run"
    faults = ["member", "kill"]
    kinds = [(f.kind, f.victims) for f in plan(2, faults, 20)]
    assert ("member", "remove-leader") in kinds and ("member", "replace-follower") in kinds
    result = run_chaos(
        ChaosOptions(out=out, nodes=3, duration=20, faults=faults, clients=4, seed=2, snapshot_every=100), say=lambda m: None
    )
    assert result.ok, result.verdicts
    summary = dict(result.summary)
    # Failed operations are safe (never applied) but should be rare: a margin that
    # holds on a loaded 2-core machine, not zero.
    assert summary["operations failed"] <= summary["operations ok"] // 100, summary
    details = [f["detail"] for f in json.loads((out / "faults.json").read_text()) if f["kind"] == "member"]
    assert any(d.endswith("removed") for d in details) and any("replaced node" in d for d in details), details
    # The new node (4) took part to the end; the replaced one stayed stopped.
    settled = next(d for name, _, d in result.verdicts if name == "one settled configuration")
    assert "4" in settled and (out / "logs" / "node-4.jsonl").exists()


def test_chaos_rolling_restart_of_five_nodes_every_verdict_passes(tmp_path):
    """Rolling restarts (followers first, the leader last after handing over) while
    clients write and read: linearizable, nothing lost, and operations that fail or
    end unknown stay rare (leaders hand over instead of dying)."""
    out = tmp_path / "run"
    assert [f.kind for f in plan(1, ["rolling"], 12)].count("rolling") >= 2
    result = run_chaos(ChaosOptions(out=out, nodes=5, duration=12, faults=["rolling"], clients=4, seed=1), say=lambda m: None)
    assert result.ok, result.verdicts
    summary = dict(result.summary)
    assert summary["operations failed"] + summary["operations unknown"] <= summary["operations ok"] // 100, summary
    rolls = json.loads((out / "faults.json").read_text())
    assert len(rolls) >= 2 and all(sorted(r["nodes"]) == [1, 2, 3, 4, 5] for r in rolls), rolls
    assert all("leaderless at handover (ms): " in r["detail"] and "none" not in r["detail"] for r in rolls), rolls


def test_settled_configuration_verdict_can_fail():
    def status(node, voters, learners=(), outgoing=()):
        return {"node": node, "membership": {"voters": list(voters), "learners": list(learners), "outgoing": list(outgoing)}}

    good = [status(n, [1, 2, 3]) for n in (1, 2, 3)]
    assert settled_configuration(good, [1, 2, 3])[1]
    joint = [status(n, [1, 2, 4], outgoing=[1, 2, 3]) for n in (1, 2, 3, 4)]
    assert not settled_configuration(joint, [1, 2, 4])[1]
    learner_left = [status(n, [1, 2, 3], learners=[4]) for n in (1, 2, 3)]
    assert "learners left" in settled_configuration(learner_left, [1, 2, 3])[2]
    differ = good[:2] + [status(3, [1, 2, 3, 4])]
    assert "different configurations" in settled_configuration(differ, [1, 2, 3])[2]
    assert "running nodes" in settled_configuration(good + [status(4, [1, 2, 3])], [1, 2, 3])[2]


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


def test_chaos_follows_the_cluster_through_replacements_and_partitions(tmp_path):
    """Seed 6 replaces a node, then cuts links one way, hands leadership over, runs
    two rolling restarts and removes a node: the supervisor keeps track of every
    process, so every membership, transfer and rolling fault after the replacement
    is injected (none skipped for want of a leader it lost sight of), clients follow
    the new members, and the run ends with its verdicts."""
    root_ok, why = available()
    if not root_ok:
        pytest.skip(f"partitions need network namespaces: {why}")
    out = tmp_path / "run"
    faults = ["member", "partition", "transfer", "rolling"]
    planned = [(f.kind, f.victims) for f in plan(6, faults, 40)]
    assert planned[0] == ("member", "replace-follower") and ("partition", "one-way") in planned
    result = run_chaos(ChaosOptions(out=out, nodes=3, duration=40, faults=faults, clients=4, seed=6), say=lambda m: None)
    assert result.ok, result.verdicts
    ran = json.loads((out / "faults.json").read_text())
    assert "replaced node" in ran[0]["detail"], ran[0]
    after = [f for f in ran[1:] if f["kind"] in ("member", "transfer", "rolling")]
    assert len(after) >= 4 and not [f for f in after if f["skipped"]], after


def test_chaos_through_the_redis_port_every_verdict_passes(tmp_path, monkeypatch):
    """The same run, its clients speaking Redis through redis-py to any node's RESP
    port (followers forward), over mutual TLS, with every fault this machine can
    inject: the history is as linearizable, and nothing acknowledged is lost. Every
    command redis-py sends is counted, so the history is known to have gone through
    the RESP ports."""
    faults = ["kill", "pause", "power", "stop", "transfer", "corrupt", "clock", "member"]
    root_ok, _ = available()
    if root_ok:
        faults += ["partition", "slow"]
    sent: Counter[str] = Counter()
    lock = threading.Lock()
    execute = redis.Redis.execute_command

    def counted(self, *args, **options):
        with lock:
            sent[str(args[0]).upper()] += 1
        return execute(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counted)
    out = tmp_path / "run"
    result = run_chaos(
        ChaosOptions(out=out, nodes=3, duration=20, faults=faults, clients=4, seed=7, snapshot_every=100, tls=True, protocol="redis"),
        say=lambda m: None,
    )
    assert result.ok, result.verdicts
    summary = dict(result.summary)
    assert summary["clients speak"].startswith("Redis") and summary["operations ok"] > 100, summary
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert {r["op"] for r in history} >= {"put", "get", "delete", "cas"}
    assert all(r["expect"] is None for r in history if r["op"] == "cas")  # Redis compares with an absent key only
    # Each operation that ran was a command redis-py sent (SET NX GET is a SET).
    ran = [r for r in history if r["ok"] or r.get("mismatch")]
    assert sent["SET"] + sent["GET"] + sent["DEL"] >= len(ran), (len(ran), sent)
