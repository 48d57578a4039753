"""Raft's story, told from the real processes' JSON logs: the election that made the
current leader, then one traced write (`client set x 10 --trace`) from proposal to
every node applying it. `scripts/supervisor.py timeline` prints it.

Times are relative to the story's first line and come from each node's own clock
(one machine here, so they line up; across machines they are as good as the clocks).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

Record = dict[str, Any]
ELECTION_EVENTS = ("pre_vote_started", "pre_vote_granted", "election_started", "vote_granted", "became_leader", "became_follower")


def story(records: Iterable[Record]) -> list[tuple[float, int, str]]:
    """[(seconds since the first line, node, what happened)] for the newest traced
    write and the election of the leader that took it. Empty without a traced write."""
    records = [r for r in records if isinstance(r.get("ts"), str) and r["ts"]]
    writes = [r for r in records if r.get("event") == "trace_appended" and r.get("by") == "leader"]
    if not writes:
        return []
    write = writes[-1]
    leader, term, index = write.get("node"), write.get("term"), write.get("index")
    lines = _election(records, leader, term, write["ts"]) + [
        r for r in records if r.get("event", "").startswith("trace_") and r.get("index") == index and r["ts"] >= write["ts"]
    ]
    lines.sort(key=lambda r: r["ts"])
    t0 = _seconds(lines[0]["ts"])
    return [(_seconds(r["ts"]) - t0, r.get("node", 0), _say(r, leader)) for r in lines]


def _election(records: list[Record], leader: Any, term: Any, before: str) -> list[Record]:
    won = [
        r for r in records if r.get("event") == "became_leader" and r.get("node") == leader and r.get("term") == term and r["ts"] <= before
    ]
    if not won:
        return []
    end = won[-1]["ts"]
    started = [
        r for r in records if r.get("event") in ("pre_vote_started", "election_started") and r.get("node") == leader and r["ts"] <= end
    ]
    # The candidacy that won: the last pre-vote (or election) the leader began before winning.
    start = next((r["ts"] for r in reversed(started) if r.get("event") == "pre_vote_started"), started[-1]["ts"] if started else end)
    out = []
    for r in records:
        if not (
            start <= r["ts"] <= end
            or (r.get("event") == "became_follower" and r.get("leader") == leader and r.get("term") == term and r["ts"] <= before)
        ):
            continue
        e = r.get("event")
        if e in ("pre_vote_started", "election_started", "became_leader") and r.get("node") == leader:
            out.append(r)
        elif e in ("pre_vote_granted", "vote_granted") and r.get("candidate") == leader:
            out.append(r)
        elif e == "became_follower" and r.get("leader") == leader and r.get("term") == term:
            out.append(r)
    return out


def _say(r: Record, leader: Any) -> str:
    e, n = r.get("event"), r.get("node")
    cmd = r.get("command", "")
    i = r.get("index")
    match e:
        case "pre_vote_started":
            return f"election timeout: heard no leader; asks the others whether they would vote for it in term {r.get('term', 0) + 1} (pre-vote)"
        case "pre_vote_granted":
            return f"would vote for node {r.get('candidate')} in term {r.get('for_term')}"
        case "election_started":
            return f"becomes candidate in term {r.get('term')}: votes for itself and asks every voter for theirs"
        case "vote_granted":
            return f"votes for node {r.get('candidate')} in term {r.get('term')}"
        case "became_leader":
            return f"has a majority of votes: LEADER of term {r.get('term')}"
        case "became_follower":
            return f"follows node {r.get('leader')} in term {r.get('term')}"
        case "trace_appended" if r.get("by") == "leader":
            return f"client sends {cmd}: the leader appends it to its log at index {i} (term {r.get('entry_term')})"
        case "trace_appended":
            return f"appends {cmd} at index {i}"
        case "trace_sent":
            return f"sends AppendEntries with index {i} to node {r.get('peer')}"
        case "trace_acknowledged":
            return f"has index {i} on disk (fsynced): acknowledges to node {r.get('leader')}"
        case "trace_ack_received":
            return f"hears node {r.get('peer')} holds index {i} ({r.get('acks')} follower(s) so far)"
        case "trace_committed" if n == leader:
            return f"a majority holds index {i}: COMMITTED"
        case "trace_committed":
            return f"learns index {i} is committed"
        case "trace_applied":
            return f"applies {cmd} to its key-value store"
    return str(e)


def _seconds(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def render(lines: list[tuple[float, int, str]]) -> str:
    if not lines:
        return "no traced write in the logs: run `python -m raftproc.client set x 10 --trace` first"
    return "\n".join(f"+{t * 1000:9.1f} ms  node {n}  {text}" for t, n, text in lines)
