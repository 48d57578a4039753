"""The demo's tour of a local 5-node cluster (scripts/demo.py is the command): a few
writes, a SIGKILL of the leader, a new leader, every node applying the same log
(the killed one too, once restarted), and one traced write told from the nodes'
own logs. Or the same cluster in slow motion under the live page."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

from raftproc import build
from raftproc.ops.cluster import Cluster
from raftproc.ops.layout import local_config
from raftproc.ops.links import LinkTable
from raftproc.ops.logs import merged
from raftproc.ops.timeline import render, story
from raftproc.runtime.resp import encode_command

RUN_DIR = Path("run")
DATA_DIR = Path("data/demo")
LOG_DIR = Path("logs")
TRACED = ("x", "10")  # the write whose story the tour tells


def fresh_cluster(**overrides: Any) -> Cluster:
    """A new 5-node cluster's config in ./run (a running one is stopped, its data and logs removed)."""
    cluster = Cluster(RUN_DIR)
    if cluster.config_path.exists():
        cluster.down()
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    for old in LOG_DIR.glob("node-*.jsonl"):
        old.unlink()
    cluster.create(local_config(5, DATA_DIR, LOG_DIR, base_port=7000, link_faults=True, **overrides))
    return cluster


def tour() -> None:
    cluster = fresh_cluster()
    print("starting 5 nodes: python -m raftproc.node --id N (peers on 7101-7105, clients on 7201-7205, Redis on 7401-7405)")
    print(f"  the {build.BUILD} build ({build.WHY})")
    cluster.up()
    leader = cluster.wait_for_leader()
    print(f"  node {leader} is the leader")
    _write_and_read(cluster)
    _fail_over(cluster, leader)
    _tell_a_traced_write(cluster)
    _speak_redis(cluster)
    print()
    print("The cluster is still running. Look at it and stop it with:")
    print("    .venv/bin/python scripts/supervisor.py status")
    print("    .venv/bin/python scripts/supervisor.py logs --event became_leader --event election_started")
    print("    .venv/bin/python -m raftproc.client set x 11 --trace && .venv/bin/python scripts/supervisor.py timeline")
    print("    .venv/bin/python -m raftproc.client get y")
    print("    redis-cli -p 7401 set x 10 && redis-cli -p 7403 get x   # with Debian's redis-tools")
    print("    .venv/bin/python scripts/supervisor.py down")


def _write_and_read(cluster: Cluster) -> None:
    client = cluster.client(timeout=10)
    try:
        client.set("x", "1")
        print("  SET x=1: OK")
        client.set("y", "3")
        print("  SET y=3: OK")
        client.delete("x")
        print("  DEL x: OK")
        print(f"  GET x -> {client.get('x')!r}, GET y -> {client.get('y')!r}")
    finally:
        client.close()


def _fail_over(cluster: Cluster, leader: int) -> None:
    """SIGKILL of the leader, a write under the new one, the old one restarted and caught up."""
    print(f"killing the leader, node {leader}, with SIGKILL")
    cluster.kill(leader)
    new_leader = cluster.wait_for_leader(other_than=leader)
    print(f"  node {new_leader} is the new leader")
    client = cluster.client(timeout=10)
    try:
        client.set("after-failover", "yes")
    finally:
        client.close()
    print("  SET after-failover=yes: OK")
    print("every running node has applied the same log:")
    _show(cluster.wait_converged())
    print(f"restarting node {leader}; it replays its WAL and catches up")
    cluster.start(leader)
    _show(cluster.wait_converged())


def _speak_redis(cluster: Cluster) -> None:
    """A SET and a GET in the Redis protocol, to the last node (most likely a follower, which forwards them)."""
    node = max(cluster.config.nodes)
    address = cluster.config.node(node).redis
    assert address is not None
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(encode_command([b"SET", b"from-redis", b"hello"]) + encode_command([b"GET", b"from-redis"]))
        answer = b""
        while answer.count(b"\r\n") < 3:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    print(f"node {node} speaks Redis too (port {address[1]}): SET from-redis hello, GET from-redis -> {answer!r}")


def _show(statuses: list[dict[str, Any]]) -> None:
    for s in sorted(statuses, key=lambda s: s["node"]):
        print(
            f"    node {s['node']}: {s['role']:<9} term {s['term']:<3} applied {s['last_applied']:<3} "
            f"log digest {s['log_digest'][:16]}  keys {s['keys']}"
        )


def _tell_a_traced_write(cluster: Cluster) -> None:
    key, value = TRACED
    print(f"one traced write, SET {key}={value}, as the nodes' JSON logs tell it (scripts/supervisor.py timeline):")
    client = cluster.client(timeout=10)
    try:
        client.set(key, value, trace=True)
    finally:
        client.close()
    print(render(_wait_for_story(cluster, f"applies SET {key}={value}")))


def _wait_for_story(cluster: Cluster, applied: str, timeout: float = 10.0) -> list[tuple[float, int, str]]:
    """The timeline once every running node has logged `applied`, or `timeout` passed."""
    paths = sorted(cluster.config.log_dir.glob("node-*.jsonl"))
    running = sum(1 for p in cluster.processes() if p.state == "running")
    deadline = time.monotonic() + timeout
    while True:
        lines = story(merged(paths))
        if sum(applied in text for _, _, text in lines) >= running or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)  # poll interval of a wait-until loop


def slow_motion(slow: int, delay_ms: int) -> int:
    """The cluster with Raft timers `slow` times slower and every peer message held
    back `delay_ms`, under the live page until Ctrl-C."""
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
