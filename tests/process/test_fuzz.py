"""No frame ends a node: a seeded fuzzer (raftproc.ops.fuzz) sends mutated frames
to the peer, client and RESP ports of a running node; every node lives on and answers, and every fault
cost only its connection. RAFTPROC_FUZZ_FRAMES runs a longer fuzz."""

from __future__ import annotations

import os

import pytest
from conftest import log_events, make_cluster
from support import wait_until

from raftproc.ops.fuzz import fuzz
from raftproc.runtime.logging import SparseLog

pytestmark = pytest.mark.process

FRAMES = int(os.environ.get("RAFTPROC_FUZZ_FRAMES", "10000"))


def test_fuzzed_frames_on_every_port_end_no_node(tmp_path):
    # Four nodes configured, three started: the fuzzer claims to be node 4 on the
    # peer port, so its hello is admitted and the mutated messages reach the core.
    cluster = make_cluster(tmp_path, 4)
    try:
        for n in (1, 2, 3):
            cluster.start(n)
        cluster.wait_for_leader(timeout=20)
        target = cluster.config.node(1)
        pids = {n: cluster.process(n).pid for n in (1, 2, 3)}
        stats = fuzz(target.peer, target.client, me=4, target=1, frames=FRAMES, seed=1, redis=target.redis)
        print(f"fuzz: {stats}")
        # The fuzzer sees a close only when its next send on that port fails, which
        # depends on timing: a floor, not a rate.
        assert stats.frames == FRAMES and stats.closed_by_node > FRAMES // 100, stats
        for n in (1, 2, 3):
            assert cluster.process(n).state == "running" and cluster.process(n).pid == pids[n], f"node {n} died"
            wait_until(lambda: cluster.node_status(n) is not None, 10, f"node {n} to answer")
        events = [e["event"] for e in log_events(cluster, 1)]
        assert "frame_error" in events
        # A flood of bad frames costs a few log lines, not the disk: on each of the
        # three ports (peer, client, Redis) the first SparseLog.FIRST, then the 100th,
        # 1,000th, ... (a faster node reaches more of them).
        assert events.count("frame_error") <= 3 * (SparseLog.FIRST + 4), events.count("frame_error")
        assert "node_stopped" not in events
    finally:
        cluster.down(timeout=3)
