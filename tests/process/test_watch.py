"""Watching real processes (raftproc.ops.watch, raftproc.ops.web; docs/watch.md):
slow motion is the real thing, seen in the event stream, and a recorded run replays
with the same leader changes in the same order."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from conftest import make_cluster
from support import wait_until

from raftproc.ops.links import LinkTable
from raftproc.ops.replay import LeaderChanges
from raftproc.ops.watch import Collector
from raftproc.ops.web import WebServer

pytestmark = pytest.mark.process

SLOW = 10
DELAY_MS = 300


def test_slow_motion_stretches_the_election_and_the_vote_travels_the_injected_delay(tmp_path):
    """`up --slow 10` multiplies every Raft timer by ten and `--link-delay` holds each
    peer message back: from the stream, the election after the leader's death starts
    no sooner than the scaled timeout after the candidate last heard the leader, and
    each vote granted leaves its voter at least the delay after the request left the
    candidate."""
    cluster = make_cluster(tmp_path, 3, tick_ms=10 * SLOW, link_faults=True)
    table = LinkTable()
    table.slow_all(DELAY_MS)
    table.save(cluster.run_dir)
    cfg = cluster.config
    collector = Collector(lambda: cluster.config)
    sub = collector.subscribe()
    collector.start()
    events: list[dict] = []
    try:
        cluster.up(wait=60)
        old = cluster.wait_for_leader(timeout=60)
        wait_until(lambda: events.extend(sub.take(0.1)) or sum(e["kind"] == "stream" for e in events) >= 3, 20, "every node's stream")
        cluster.kill(old)
        new = cluster.wait_for_leader(timeout=60, other_than=old)
        wait_until(
            lambda: (
                events.extend(sub.take(0.1)) or any(e["kind"] == "state" and e["node"] == new and e["role"] == "leader" for e in events)
            ),
            20,
            "the new leader in the stream",
        )
    finally:
        collector.stop()
        cluster.down(timeout=3)
    killed_at = next(e["t"] for e in events if e["kind"] == "stream" and e["node"] == old and e["state"] == "lost")
    started = [e for e in events if e["kind"] == "log" and e["node"] == new and e["event"] == "pre_vote_started" and e["t"] > killed_at]
    assert started, "the new leader's campaign is not in the stream"
    campaign = started[0]["t"]
    heard = [
        e["t_last"]
        for e in events
        if e["kind"] == "msg"
        and e["node"] == new
        and e["dir"] == "recv"
        and e["peer"] == old
        and e["type"] in ("heartbeat", "append")
        and e["t_last"] < campaign
    ]
    waited = campaign - max(heard)
    tick = 0.010 * SLOW  # a normal tick, ten times over
    # The timer counts whole ticks and the first one after a heartbeat may come at once;
    # on a loaded machine a late timer is counted as the ticks its lateness rounds to
    # (raftproc.server.ticker), so a campaign may come a tick or two early. Unslowed,
    # it would come within 0.3 s.
    assert waited >= (cfg.election_timeout_min - 3) * tick, f"campaign {waited:.2f} s after the last heartbeat"
    requests = [e for e in events if e["kind"] == "msg" and e["node"] == new and e["dir"] == "sent" and e["type"] in ("prevote", "vote")]
    grants = [
        e
        for e in events
        if e["kind"] == "msg" and e["peer"] == new and e["dir"] == "sent" and e["type"] in ("prevote_resp", "vote_resp") and e["ok"]
    ]
    assert grants, "no vote granted to the new leader in the stream"
    for g in grants:
        asked = [r["t"] for r in requests if r["peer"] == g["node"] and r["type"] + "_resp" == g["type"] and r["t"] <= g["t"]]
        assert asked, f"a grant without its request: {g}"
        assert g["t"] - max(asked) >= DELAY_MS / 1000, f"{g['type']} from node {g['node']} {g['t'] - max(asked):.3f} s after its request"


def _get(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"X-Raftproc-Page": "1", "Content-Type": "application/json"}
    )
    return json.loads(urllib.request.urlopen(req, timeout=60).read())


def test_a_recorded_run_replays_the_same_leader_changes_in_the_same_order(tmp_path):
    cluster = make_cluster(tmp_path, 3, link_faults=True)
    cluster.up(wait=20)
    server = WebServer(cluster, listen="127.0.0.1:0")
    server.start()
    base = server.url.rstrip("/")
    live = LeaderChanges()
    stop = threading.Event()

    def watch() -> None:
        with urllib.request.urlopen(base + "/api/stream", timeout=30) as stream:
            for line in stream:
                if line.startswith(b"data: "):
                    for e in json.loads(line[6:]):
                        if e["kind"] == "keyframe":
                            for n in e["nodes"].values():
                                if n["state"]:
                                    live.apply(n["state"])
                        live.apply(e)
                if stop.is_set():
                    return

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        first = cluster.wait_for_leader()
        wait_until(lambda: live.seen, 10, "the leader in the live stream")
        assert _post(base, "/api/action", {"action": "kill", "node": first})["ok"]
        second = cluster.wait_for_leader(other_than=first, timeout=20)
        assert _post(base, "/api/action", {"action": "start", "node": first})["ok"]
        cluster.wait_converged()  # the restarted node caught up: a transfer to it can finish
        answer = _post(base, "/api/action", {"action": "transfer", "node": first})
        assert answer["ok"], answer
        wait_until(lambda: [n for _, n in live.seen][-2:] == [second, first], 20, "both handovers in the live stream")
        cluster.wait_converged()
    finally:
        stop.set()
        server.stop()
        cluster.down(timeout=3)
    replay = WebServer(cluster, listen="127.0.0.1:0", replay=cluster.run_dir)
    replay.start()
    try:
        rbase = replay.url.rstrip("/")
        assert _get(rbase + "/api/meta")["mode"] == "replay"
        index = _get(rbase + "/api/replay/index")
        marked = [(m["term"], m["node"]) for m in index["markers"] if m["kind"] == "leader"]
        played = LeaderChanges()
        at = index["start"]
        while at is not None:
            page = _get(f"{rbase}/api/replay/events?from={at}&to={index['end'] + 1}")
            for e in page["events"]:
                played.apply(e)
            at = page["next"]
        actions = [m["label"] for m in index["markers"] if m["kind"] == "action"]
        end = _get(f"{rbase}/api/replay/keyframe?at={index['end']}")
    finally:
        replay.stop()
    assert marked == live.seen and played.seen == live.seen, f"live {live.seen}, index {marked}, played {played.seen}"
    assert [n for _, n in live.seen][:3] == [first, second, first]
    assert actions[:3] == [f"kill node {first}", f"start node {first}", f"transfer node {first}"]
    assert end["nodes"][str(first)]["state"]["role"] == "leader"


def test_the_page_watches_and_controls_a_tls_cluster_with_the_admin_certificate(tmp_path):
    cluster = make_cluster(tmp_path, 3, tls=True, link_faults=True)
    cluster.up(wait=20)
    server = WebServer(cluster, listen="127.0.0.1:0")
    server.start()
    base = server.url.rstrip("/")
    try:
        assert _get(base + "/api/meta")["tls"] is True
        with urllib.request.urlopen(base + "/api/stream", timeout=10) as stream:
            first = next(json.loads(line[6:]) for line in stream if line.startswith(b"data: "))
        keyframe = first[0]
        assert keyframe["kind"] == "keyframe" and set(keyframe["nodes"]) == {"1", "2", "3"}
        wait_until(lambda: set(server.collector.picture.states) == {1, 2, 3}, 10, "every node's state over the stream")
        # Link faults and transfers need the admin certificate the supervisor presents.
        leader = cluster.wait_for_leader()
        follower = next(n for n in (1, 2, 3) if n != leader)
        assert _post(base, "/api/action", {"action": "partition", "node": follower})["ok"]
        wait_until(
            lambda: server.collector.picture.states[follower]["links"]["drop_to"] == sorted({1, 2, 3} - {follower}),
            10,
            "the cut in the node's own state",
        )
        assert _post(base, "/api/action", {"action": "heal"})["ok"]
        assert _post(base, "/api/action", {"action": "transfer", "node": follower})["ok"]
        answer = _post(base, "/api/client", {"op": "set", "key": "x", "value": "10"})
        assert answer["ok"] and answer["answered_by"] == follower, answer
    finally:
        server.stop()
        cluster.down(timeout=3)
