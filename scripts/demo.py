#!/usr/bin/env python3
"""Start a local 5-node cluster through the supervisor and show Raft at work:
three writes, a SIGKILL of the leader, a new leader, and every node applying
the same log (the killed node too, once restarted); then one traced write,
SET x=10, told step by step from the nodes' own logs (the election that made
the leader, append, replicate, acknowledge, commit, apply). The cluster keeps
running afterwards; the last lines say how to look at it and how to stop it."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from raftproc.ops.cluster import Cluster, ClusterError, local_config
from raftproc.ops.logs import merged
from raftproc.ops.timeline import render, story

RUN_DIR = Path("run")
DATA_DIR = Path("data/demo")
LOG_DIR = Path("logs")


def show(statuses: list[dict]) -> None:
    for s in sorted(statuses, key=lambda s: s["node"]):
        print(
            f"    node {s['node']}: {s['role']:<9} term {s['term']:<3} applied {s['last_applied']:<3} "
            f"log digest {s['log_digest'][:16]}  keys {s['keys']}"
        )


def _wait_for_story(cluster: Cluster, timeout: float = 10.0) -> list:
    """The timeline once every running node has logged applying the traced write."""
    paths = sorted(cluster.config.log_dir.glob("node-*.jsonl"))
    running = sum(1 for p in cluster.processes() if p.state == "running")
    deadline = time.monotonic() + timeout
    while True:
        lines = story(merged(paths))
        if sum("applies SET x=10" in text for _, _, text in lines) >= running or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)  # poll interval of a wait-until loop


def main() -> int:
    cluster = Cluster(RUN_DIR)
    if cluster.config_path.exists():
        cluster.down()
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    for old in LOG_DIR.glob("node-*.jsonl"):
        old.unlink()
    cfg = local_config(5, DATA_DIR, LOG_DIR, base_port=7000)
    cluster.create(cfg)
    print("starting 5 nodes: python -m raftproc.node --id N (peers on 7101-7105, clients on 7201-7205)")
    cluster.up()
    leader = cluster.wait_for_leader()
    print(f"  node {leader} is the leader")

    client = cluster.client(timeout=10)
    for label, op in (("SET x=1", lambda: client.set("x", "1")), ("SET y=3", lambda: client.set("y", "3")), ("DEL x", lambda: client.delete("x"))):
        op()
        print(f"  {label}: OK")
    print(f"  GET x -> {client.get('x')!r}, GET y -> {client.get('y')!r}")

    print(f"killing the leader, node {leader}, with SIGKILL")
    cluster.kill(leader)
    new_leader = cluster.wait_for_leader(other_than=leader)
    print(f"  node {new_leader} is the new leader")
    client.set("after-failover", "yes")
    print("  SET after-failover=yes: OK")
    print("every running node has applied the same log:")
    show(cluster.wait_converged())

    print(f"restarting node {leader}; it replays its WAL and catches up")
    cluster.start(leader)
    show(cluster.wait_converged())

    print("one traced write, SET x=10, as the nodes' JSON logs tell it (scripts/supervisor.py timeline):")
    client.set("x", "10", trace=True)
    client.close()
    print(render(_wait_for_story(cluster)))
    print()
    print("The cluster is still running. Look at it and stop it with:")
    print("    .venv/bin/python scripts/supervisor.py status")
    print("    .venv/bin/python scripts/supervisor.py logs --event became_leader --event election_started")
    print("    .venv/bin/python -m raftproc.client set x 11 --trace && .venv/bin/python scripts/supervisor.py timeline")
    print("    .venv/bin/python -m raftproc.client get y")
    print("    .venv/bin/python scripts/supervisor.py down")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ClusterError as e:
        print(f"demo: {e}", file=sys.stderr)
        sys.exit(1)
