"""What the live page draws, streamed by the node itself: `GET /events` on the
metrics address (raftproc.server.metrics), one JSON object per line. The fields of
each kind are documented in docs/watch.md, section 1.

Two parts:
- `EventFeed` collects what happens during a loop pass: log events worth drawing
  (it taps the node's log function, so there is one place where events are named),
  and peer messages sent and received. Votes, their answers and TimeoutNow are kept
  one by one; everything else is counted into one event per (direction, peer, type,
  term, answer) every FLUSH_INTERVAL, so however busy the node is, the stream's rate
  stays bounded.
- `Watch` adds the node's Raft state: at the end of every pass it sends a `state`
  event if something that matters changed (at once for role, term, vote, leader,
  membership and link faults; at most every STATE_INTERVAL for commit, applied, the
  log, the timer and progress), then hands the pass's events to every watcher.

Nobody watching costs one attribute test per message and per pass. A watcher that
falls behind by more than MAX_WATCHER_BUFFER is disconnected, never waited for.
Nothing streamed carries a key or value except those of writes marked traced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from raftproc.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftproc.core.node import RaftNode
from raftproc.core.types import CANDIDATE, LEADER, PRE_CANDIDATE
from raftproc.kv.commands import Command, is_traced
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime.loop import EventLoop
from raftproc.runtime.transfer import SnapshotAck, SnapshotChunk
from raftproc.server.links import LinkShaper

Log = Callable[..., None]
STATE_INTERVAL = 0.05  # seconds between state events that only carry progress
FLUSH_INTERVAL = 0.05  # seconds over which routine messages are counted into one event
MAX_WATCHERS = 4
MAX_WATCHER_BUFFER = 1 << 20  # bytes a watcher may fall behind before it is dropped
LOG_TAIL = 12  # entries of the log each state event shows
MAX_FIELD_CHARS = 200
# Sent one event per message: elections and handovers are the story, and rare.
ONE_BY_ONE = frozenset({"prevote", "prevote_resp", "vote", "vote_resp", "timeout_now"})
SHOWN_EVENTS = frozenset(
    {
        "pre_vote_started",
        "pre_vote_granted",
        "pre_vote_rejected",
        "election_started",
        "vote_granted",
        "vote_rejected",
        "became_leader",
        "became_follower",
        "leader_stepped_down",
        "leadership_transfer_started",
        "timeout_now_sent",
        "leadership_transfer_received",
        "leadership_transfer_aborted",
        "config_change_appended",
        "joint_config_committed",
        "config_applied",
        "leader_removed",
        "log_compacted",
        "snapshot_send_started",
        "snapshot_received",
        "snapshot_restored",
        "disk_full",
        "disk_write_resumed",
        "trace_appended",
        "trace_sent",
        "trace_acknowledged",
        "trace_ack_received",
        "trace_committed",
        "trace_applied",
        "node_started",
        "peer_connected",
        "peer_disconnected",
    }
)


class Watcher(Protocol):
    def push(self, data: bytes) -> bool:
        """Queue bytes for the watcher; False when it is too far behind."""

    def close(self) -> None: ...


def message_type(msg: Any) -> tuple[str, bool | None]:
    """The stream's name for a peer frame, and its answer (None for requests)."""
    if isinstance(msg, AppendEntries):
        return ("append" if msg.entries else "heartbeat"), None
    if isinstance(msg, AppendEntriesResponse):
        return "append_resp", msg.success
    if isinstance(msg, RequestVote):
        return ("prevote" if msg.pre_vote else "vote"), None
    if isinstance(msg, RequestVoteResponse):
        return ("prevote_resp" if msg.pre_vote else "vote_resp"), msg.vote_granted
    if isinstance(msg, (InstallSnapshot, SnapshotChunk)):
        return "snapshot", None
    if isinstance(msg, SnapshotAck):
        return "snapshot_ack", None
    if isinstance(msg, TimeoutNow):
        return "timeout_now", None
    return type(msg).__name__.lower(), None


class EventFeed:
    def __init__(self, me: int, now: Callable[[], float]) -> None:
        """`now`: the wall clock (events from several machines are put side by side)."""
        self.me = me
        self.now = now
        self.watchers: list[Watcher] = []
        self.watched = False
        self.pending: list[dict[str, Any]] = []  # this pass's events, in order
        self._counted: dict[tuple, list] = {}  # key -> [n, entries, first t, last t]

    def add(self, watcher: Watcher) -> None:
        self.watchers.append(watcher)
        self.watched = True

    def remove(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)
        self.watched = bool(self.watchers)
        if not self.watched:
            self.pending.clear()
            self._counted.clear()

    def tap(self, log: Log) -> Log:
        """`log`, also feeding the events the page tells to whoever watches."""

        def log_and_feed(event: str, level: str = "info", **fields: Any) -> None:
            log(event, level=level, **fields)
            if self.watched and event in SHOWN_EVENTS:
                self.pending.append({"t": self.now(), "kind": "log", "node": self.me, "event": event, **_bounded(fields)})

        return log_and_feed

    def sent(self, msg: Any, delivered: bool) -> None:
        self._message("sent", msg.dst, msg, not delivered)

    def received(self, msg: Any) -> None:
        self._message("recv", msg.src, msg, False)

    def _message(self, direction: str, peer: int, msg: Any, lost: bool) -> None:
        kind, ok = message_type(msg)
        now = self.now()
        entries = len(msg.entries) if isinstance(msg, AppendEntries) else 0
        if kind in ONE_BY_ONE:
            self.pending.append(_msg_event(now, self.me, direction, peer, kind, msg.term, ok, lost, 1, entries, now))
            return
        key = (direction, peer, kind, msg.term, ok, lost)
        counted = self._counted.get(key)
        if counted is None:
            self._counted[key] = [1, entries, now, now]
        else:
            counted[0] += 1
            counted[1] += entries
            counted[3] = now

    def flush_counted(self) -> None:
        """Move the messages counted since the last flush into this pass's events."""
        for (direction, peer, kind, term, ok, lost), (n, entries, first, last) in self._counted.items():
            self.pending.append(_msg_event(first, self.me, direction, peer, kind, term, ok, lost, n, entries, last))
        self._counted.clear()

    def publish(self, events: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in events).encode()
        for w in list(self.watchers):
            if not w.push(data):
                self.remove(w)
                w.close()


def _msg_event(
    t: float, me: int, direction: str, peer: int, kind: str, term: int, ok: bool | None, lost: bool, n: int, entries: int, last: float
) -> dict[str, Any]:
    return {
        "t": t,
        "kind": "msg",
        "node": me,
        "dir": direction,
        "peer": peer,
        "type": kind,
        "term": term,
        "n": n,
        "entries": entries,
        "ok": ok,
        "lost": lost,
        "t_last": last,
    }


def _bounded(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if k in ("level", "t", "kind", "node"):
            continue
        if isinstance(v, (bool, int, float)) or v is None:
            out[k] = v
        else:
            out[k] = str(v)[:MAX_FIELD_CHARS]
    return out


class Watch:
    """The node's Raft state for the page, added to the feed at the end of each pass."""

    def __init__(
        self,
        feed: EventFeed,
        *,
        raft: RaftNode,
        kv: KeyValueStore,
        loop: EventLoop,
        shaper: LinkShaper,
        tick_ms: int,
        disk_full: Callable[[], bool],
    ) -> None:
        self.feed = feed
        self.raft = raft
        self.kv = kv
        self.loop = loop
        self.shaper = shaper
        self.tick_ms = tick_ms
        self.disk_full = disk_full
        self._urgent_sent: tuple = ()
        self._routine_sent: tuple = ()
        self._next_state_at = 0.0
        self._timer_resets = 0
        self._last_elapsed = 0
        self._labels: dict[tuple[int, int], tuple[str, bool]] = {}  # (index, term) -> label, traced
        self._flushing = False
        loop.after_pass.append(self.end_of_pass)

    def subscribe(self, watcher: Watcher) -> bool:
        """Start streaming to `watcher`, beginning with the whole state; False when
        MAX_WATCHERS already watch."""
        if len(self.feed.watchers) >= MAX_WATCHERS:
            return False
        first = self._state_event(self.feed.now())
        if not watcher.push((json.dumps(first, separators=(",", ":")) + "\n").encode()):
            return False
        self.feed.add(watcher)
        if not self._flushing:
            self._flushing = True
            self.loop.call_later(FLUSH_INTERVAL, self._flush)
        return True

    def _flush(self) -> None:
        if not self.feed.watched:
            self._flushing = False
            return
        self.feed.flush_counted()
        self.loop.call_later(FLUSH_INTERVAL, self._flush)

    def end_of_pass(self) -> None:
        feed = self.feed
        if not feed.watched:
            return
        r = self.raft
        if r.election_elapsed < self._last_elapsed:
            self._timer_resets += 1
        self._last_elapsed = r.election_elapsed
        now = feed.now()
        if self._urgent() != self._urgent_sent or (now >= self._next_state_at and self._routine() != self._routine_sent):
            feed.pending.append(self._state_event(now))
        if feed.pending:
            term, role = r.current_term, r.role
            for e in feed.pending:
                if e["kind"] == "log":
                    e.setdefault("term", term)
                    e.setdefault("role", role)
            events, feed.pending = feed.pending, []
            events.sort(key=lambda e: e["t"])
            feed.publish(events)

    def _urgent(self) -> tuple:
        r = self.raft
        return (
            r.role,
            r.current_term,
            r.voted_for,
            r.leader_id,
            r.membership,
            self.shaper.faults,
            self.disk_full(),
            r.transferee,
            len(r.votes) if r.role in (CANDIDATE, PRE_CANDIDATE) else 0,
        )

    def _routine(self) -> tuple:
        r = self.raft
        progress = tuple((p, pr.match_index, pr.next_index) for p, pr in r.progress.items()) if r.role == LEADER else ()
        return (
            r.commit_index,
            self.kv.last_applied,
            r.log.last_index,
            r.log.snapshot_index,
            self._timer_resets,
            r.randomized_election_timeout,
            progress,
        )

    def _state_event(self, now: float) -> dict[str, Any]:
        r = self.raft
        self._urgent_sent = self._urgent()
        self._routine_sent = self._routine()
        self._next_state_at = now + STATE_INTERVAL
        campaigning = r.role in (CANDIDATE, PRE_CANDIDATE)
        m = r.membership
        return {
            "t": now,
            "kind": "state",
            "node": r.id,
            "role": str(r.role),
            "term": r.current_term,
            "vote": r.voted_for,
            "leader": r.leader_id,
            "commit": r.commit_index,
            "applied": self.kv.last_applied,
            "first": r.log.first_index,
            "last": r.log.last_index,
            "snapshot": [r.log.snapshot_index, r.log.snapshot_term],
            "timer": None if r.role == LEADER else [r.election_elapsed * self.tick_ms, r.randomized_election_timeout * self.tick_ms],
            "heartbeat_ms": r.options.heartbeat_interval * self.tick_ms,
            "votes": sorted(p for p, granted in r.votes.items() if granted) if campaigning else None,
            "log": self._tail(),
            "progress": {str(p): [pr.match_index, pr.next_index, str(pr.state)] for p, pr in sorted(r.progress.items())}
            if r.role == LEADER
            else None,
            "voters": list(m.all_voters),
            "learners": list(m.learners),
            "transfer": r.transferee,
            "disk_full": self.disk_full(),
            "links": self.shaper.faults.describe(),
            "tick_ms": self.tick_ms,
        }

    def _tail(self) -> list[list[Any]]:
        log = self.raft.log
        lo = max(log.first_index, log.last_index - LOG_TAIL + 1)
        entries = log.slice(lo, log.last_index + 1) if log.last_index >= lo else ()
        labels = {}
        tail = []
        for e in entries:
            key = (e.index, e.term)
            label = self._labels.get(key) or _label(e)
            labels[key] = label
            tail.append([e.index, e.term, label[0], label[1]])
        self._labels = labels  # only the tail's: the cache never outgrows it
        return tail


def _label(entry: Any) -> tuple[str, bool]:
    """What the page may show of an entry: its kind and operation, and the whole
    command only for a write its client marked traced."""
    if entry.membership is not None:
        return "config", False
    command = entry.command
    if command is None:
        return "noop", False
    if is_traced(command):
        try:
            return Command.decode(command).describe(), True
        except Exception:  # noqa: BLE001 - a label is never worth failing a stream for
            return "traced", True
    return _op(command), False


def _op(command: bytes) -> str:
    """The operation of an encoded command without decoding its key and value: a
    CBOR array whose first element is a short text string (raftproc.kv.commands)."""
    if len(command) >= 2 and command[0] & 0xE0 == 0x80 and command[1] & 0xE0 == 0x60:
        n = command[1] & 0x1F
        if n < 24 and len(command) >= 2 + n:
            try:
                return command[2 : 2 + n].decode("ascii")
            except UnicodeDecodeError:
                pass
    return "command"
