"""Playing a recorded run back (raftproc.ops.watch records one per `web` session and
per chaos run): any moment's whole picture, the events between two moments, and a
timeline of what a person looks for (elections, leader changes, actions, process
faults, commits).

A recording is read once, to index it: each event's time and offset, sorted by
time (streams from several nodes arrive interleaved, a pass's worth out of order),
plus a keyframe every KEYFRAME_EVERY seconds. Events are read again from the file
when asked for, so a long chaos run costs memory for its index, not its events.
"""

from __future__ import annotations

import heapq
import json
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

from raftproc.ops.watch import Picture

KEYFRAME_EVERY = 2.0  # seconds of recording between keyframes
SETTLE = 1.0  # seconds: events arriving later than this out of order are taken as they come
MAX_EVENTS = 20_000  # per `events` answer
RECENT = 50  # told events a keyframe of a replay carries


def newest_recording(path: Path) -> Path:
    """`path` if it is a file, else the newest recording under path/watch/."""
    if path.is_file():
        return path
    found = sorted((path / "watch").glob("*.jsonl"))
    if not found:
        raise FileNotFoundError(f"no recording in {path / 'watch'} (`supervisor.py web` and chaos runs make one)")
    return found[-1]


class LeaderChanges:
    """Who leads which term, in order, from state events: the same answer for a live
    stream and for its recording."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []  # (term, node)

    def apply(self, e: dict[str, Any]) -> tuple[int, int] | None:
        if e.get("kind") != "state" or e.get("role") != "leader":
            return None
        change = (e["term"], e["node"])
        if change in self.seen:
            return None
        self.seen.append(change)
        return change


class Recording:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.nodes: list[int] = []
        self.times = array("d")
        self.offsets = array("q")
        self.keyframes: list[tuple[float, Picture]] = []
        self.markers: list[dict[str, Any]] = []
        self.commits: list[list[float]] = []  # [second, highest commit index]
        self._index()

    @property
    def start(self) -> float:
        return self.times[0] if self.times else 0.0

    @property
    def end(self) -> float:
        return self.times[-1] if self.times else 0.0

    def _index(self) -> None:
        pending: list[tuple[float, int, dict[str, Any]]] = []  # a heap: events not yet settled in time order
        picture = Picture(RECENT)
        timeline = _Timeline()
        entries: list[tuple[float, int]] = []
        newest = 0.0
        next_keyframe: float | None = None
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                here, offset = offset, offset + len(line)
                try:
                    e = json.loads(line)
                except ValueError:
                    continue  # a torn last line
                if not isinstance(e, dict) or not isinstance(e.get("t"), (int, float)):
                    continue
                if e.get("kind") == "recording":
                    self.nodes = [n for n in e.get("nodes", []) if isinstance(n, int)]
                    continue
                t = float(e["t"])
                entries.append((t, here))
                newest = max(newest, t)
                if e.get("kind") != "msg":
                    heapq.heappush(pending, (t, here, e))
                while pending and pending[0][0] <= newest - SETTLE:
                    next_keyframe = self._settle(heapq.heappop(pending), picture, timeline, next_keyframe)
        while pending:
            next_keyframe = self._settle(heapq.heappop(pending), picture, timeline, next_keyframe)
        entries.sort()
        self.times = array("d", (t for t, _ in entries))
        self.offsets = array("q", (o for _, o in entries))
        self.markers, self.commits = timeline.markers, timeline.commit_series()

    def _settle(self, item: tuple[float, int, dict[str, Any]], picture: Picture, timeline: _Timeline, next_keyframe: float | None) -> float:
        t, _, e = item
        if next_keyframe is None:
            next_keyframe = t
        while t >= next_keyframe:
            self.keyframes.append((next_keyframe, picture.copy()))
            next_keyframe += KEYFRAME_EVERY
        picture.apply(e)
        timeline.apply(e)
        return next_keyframe

    # --- asking -------------------------------------------------------------------

    def keyframe(self, at: float) -> dict[str, Any]:
        """The whole picture at time `at`."""
        i = bisect_right([t for t, _ in self.keyframes], at) - 1
        if i < 0:
            return Picture(RECENT).keyframe(at, self.nodes)
        since, base = self.keyframes[i]
        picture = base.copy()
        for e in self._read(bisect_left(self.times, since), bisect_right(self.times, at)):
            if e.get("kind") != "msg":
                picture.apply(e)
        return picture.keyframe(at, self.nodes)

    def events(self, lo: float, hi: float) -> tuple[list[dict[str, Any]], float | None]:
        """Events with lo <= t < hi in time order, at most MAX_EVENTS; and where to ask again."""
        first, last = bisect_left(self.times, lo), bisect_left(self.times, hi)
        cut = min(last, first + MAX_EVENTS)
        return list(self._read(first, cut)), (self.times[cut] if cut < last else None)

    def _read(self, first: int, last: int):
        with open(self.path, "rb") as f:
            for i in range(first, last):
                f.seek(self.offsets[i])
                try:
                    yield json.loads(f.readline())
                except ValueError:
                    continue

    def index(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "nodes": self.nodes, "markers": self.markers, "commits": self.commits}


class _Timeline:
    """The markers of a recording, and its highest commit index per second."""

    def __init__(self) -> None:
        self.markers: list[dict[str, Any]] = []
        self.leaders = LeaderChanges()
        self.roles: dict[int, str | None] = {}
        self.procs: dict[int, str | None] = {}
        self.commit_by_second: dict[int, int] = {}

    def apply(self, e: dict[str, Any]) -> None:
        kind, node, t = e.get("kind"), e.get("node"), e["t"]
        if kind == "state" and isinstance(node, int):
            self._state(e, node, t)
        elif kind == "proc" and isinstance(node, int) and self.procs.get(node) != e.get("state"):
            if node in self.procs or e.get("state") != "running":
                self.markers.append({"t": t, "kind": "proc", "node": node, "label": f"node {node} {e.get('state')}"})
            self.procs[node] = e.get("state")
        elif kind == "action" and e.get("phase") == "start":
            target = f" node {e['node']}" if e.get("node") is not None else ""
            said = e.get("detail") or _args(e.get("args"))
            self.markers.append({"t": t, "kind": "action", "node": e.get("node"), "label": f"{e.get('action')}{target} {said}".strip()})

    def _state(self, e: dict[str, Any], node: int, t: float) -> None:
        if self.leaders.apply(e):
            self.markers.append({"t": t, "kind": "leader", "node": node, "term": e["term"], "label": f"node {node} leads term {e['term']}"})
        if e.get("role") == "candidate" and self.roles.get(node) != "candidate":
            self.markers.append(
                {
                    "t": t,
                    "kind": "election",
                    "node": node,
                    "term": e.get("term"),
                    "label": f"node {node} stands for term {e.get('term')}",
                }
            )
        self.roles[node] = e.get("role")
        if isinstance(e.get("commit"), int):
            second = int(t)
            self.commit_by_second[second] = max(self.commit_by_second.get(second, 0), e["commit"])

    def commit_series(self) -> list[list[float]]:
        return [[s, c] for s, c in sorted(self.commit_by_second.items())]


def _args(args: Any) -> str:
    """A page action's arguments as a person reads them: `1,2 | 3,4,5`, `1 -> 2 300 ms`."""
    if not isinstance(args, dict):
        return ""
    if isinstance(args.get("groups"), list):
        return " | ".join(",".join(map(str, g)) for g in args["groups"] if isinstance(g, list))
    if "from" in args:
        return f"{args.get('from')} -> {args.get('to')} {args.get('ms')} ms"
    return ""
