#!/usr/bin/env python3
"""Start a local 5-node cluster through the supervisor and show Raft at work:
three writes, a SIGKILL of the leader, a new leader, and every node applying
the same log (the killed node too, once restarted); then one traced write,
SET x=10, told step by step from the nodes' own logs (the election that made
the leader, append, replicate, acknowledge, commit, apply). The cluster keeps
running afterwards; the last lines say how to look at it and how to stop it.

With --web it starts the cluster in slow motion instead (every Raft timer ten times
slower, every peer message held back 100 ms, so an election can be watched) and
serves the live page until Ctrl-C: `supervisor.py up --slow 10 --link-delay 100`,
then `supervisor.py web`."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from raftproc.ops.cluster import Cluster, ClusterError
from raftproc.ops.layout import local_config
from raftproc.ops.links import LinkTable
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


def fresh_cluster(**overrides) -> Cluster:
    cluster = Cluster(RUN_DIR)
    if cluster.config_path.exists():
        cluster.down()
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    for old in LOG_DIR.glob("node-*.jsonl"):
        old.unlink()
    cluster.create(local_config(5, DATA_DIR, LOG_DIR, base_port=7000, link_faults=True, **overrides))
    return cluster


def watch(slow: int, delay_ms: int) -> int:
    from raftproc.ops.web import serve

    cluster = fresh_cluster(tick_ms=10 * slow)
    table = LinkTable()
    table.slow_all(delay_ms)
    table.save(cluster.run_dir)
    print(f"starting 5 nodes in slow motion: Raft timers {slow}x slower, every peer message held back {delay_ms} ms")
    cluster.up(wait=15 * slow)
    print(f"  node {cluster.wait_for_leader(timeout=10 * slow)} is the leader")
    print("on the page: click a node to kill, pause or cut it off; type SET x=10 in the client form and watch it commit")
    print("the cluster keeps running after Ctrl-C: .venv/bin/python scripts/supervisor.py down stops it")
    return serve(cluster, listen="127.0.0.1:7500")


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--web", action="store_true", help="start the cluster in slow motion and serve the live page")
    args.add_argument("--slow", type=int, default=10, help="with --web: Raft timers this many times slower")
    args.add_argument("--link-delay", type=int, default=100, metavar="MS", help="with --web: every peer message held back this long")
    opts = args.parse_args()
    if opts.web:
        return watch(opts.slow, opts.link_delay)
    cluster = fresh_cluster()
    print("starting 5 nodes: python -m raftproc.node --id N (peers on 7101-7105, clients on 7201-7205)")
    cluster.up()
    leader = cluster.wait_for_leader()
    print(f"  node {leader} is the leader")

    client = cluster.client(timeout=10)
    for label, op in (
        ("SET x=1", lambda: client.set("x", "1")),
        ("SET y=3", lambda: client.set("y", "3")),
        ("DEL x", lambda: client.delete("x")),
    ):
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
