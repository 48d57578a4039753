"""Read the nodes' JSON logs as one time-ordered, readable stream.

The events a filter may name are the ones the node's code logs, found by reading
that code (`logged_events`): a list written by hand would drift from what is logged.
"""

from __future__ import annotations

import ast
import difflib
import functools
import heapq
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import raftproc

FIRST_KEYS = ("ts", "node", "term", "role", "event", "level")
UNPARSABLE = "unparsable_log_line"  # what this module makes of a line that is not JSON


class LogFile:
    """One node's log, read in whole lines from where the last read stopped: a line
    still being written waits for the next read, so following a file neither loses
    nor repeats a line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0  # bytes of complete lines read so far

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    return
                self.offset += len(raw)
                record = _parse(raw.decode("utf-8", errors="replace"))
                if record is not None:
                    yield record


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    return LogFile(path).records()


def _parse(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return {"ts": "", "event": UNPARSABLE, "text": line[:200]}
    return record if isinstance(record, dict) else None


def _by_time(files: Iterable[LogFile]) -> Iterator[dict[str, Any]]:
    """The files' new lines, ordered by timestamp (each file is already in order)."""
    return heapq.merge(*(f.records() for f in files), key=lambda r: str(r.get("ts", "")))


def merged(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every line of every file, ordered by timestamp."""
    return _by_time(LogFile(p) for p in paths)


def matches(record: dict[str, Any], node: int | None, events: set[str] | None) -> bool:
    if node is not None and record.get("node") != node:
        return False
    return not events or record.get("event") in events


def format_line(r: dict[str, Any]) -> str:
    ts = str(r.get("ts", ""))
    clock = ts[11:23] if len(ts) >= 23 else ts
    extra = " ".join(f"{k}={v}" for k, v in r.items() if k not in FIRST_KEYS)
    level = r.get("level", "info")
    mark = "!" if level in ("warning", "error") else " "
    return f"{clock} {mark}n{r.get('node', '?')} t{r.get('term', '?'):<3} {str(r.get('role', '?')):<9} {r.get('event', '?'):<24} {extra}".rstrip()


def show(
    paths: list[Path], node: int | None, events: set[str] | None, *, tail: int | None, follow: bool, poll: float = 0.2
) -> Iterator[str]:
    """The matching lines, formatted: the last `tail` of them (None: all), then, with
    `follow`, each new one as it is written, until interrupted."""
    files = [LogFile(p) for p in paths]
    found = (r for r in _by_time(files) if matches(r, node, events))
    yield from map(format_line, found if tail is None else deque(found, maxlen=tail))
    while follow:
        time.sleep(poll)  # poll interval: the files are read again for new lines
        yield from (format_line(r) for r in _by_time(files) if matches(r, node, events))


def handover_gaps(paths: list[Path], since: str) -> list[float]:
    """Seconds from each TimeoutNow (logged after `since`) to the next leader."""
    sent: list[tuple[datetime, int]] = []
    elected: list[tuple[datetime, int]] = []
    for record in merged(paths):
        ts = str(record.get("ts", ""))
        if ts < since or record.get("event") not in ("timeout_now_sent", "became_leader"):
            continue
        at = datetime.fromisoformat(ts)
        (sent if record["event"] == "timeout_now_sent" else elected).append((at, record["term"]))
    gaps = []
    for at, term in sent:
        after = [t for t, leader_term in elected if leader_term > term and t >= at]
        if after:
            gaps.append((min(after) - at).total_seconds())
    return gaps


# --- the events the nodes log -----------------------------------------------------------

# What runs in a node process and writes its JSON log.
NODE_SOURCES = ("node.py", "core", "kv", "runtime", "server")


@dataclass(frozen=True)
class LoggedEvents:
    names: frozenset[str]
    unread: tuple[str, ...]  # "file:line" of log calls whose event name the scan cannot read


def logged_events(root: Path = Path(raftproc.__file__).parent) -> LoggedEvents:
    """Every event name the node's code logs. An event is named where it is logged:
    the first argument of a call to a function whose name ends in `log` (or `warn`,
    what start-up recovery reports through) is a string (or a choice of two), or a
    line built by hand is a dict with a string "event". A forwarder passes on its own
    `event` parameter. Any other log call is `unread`: tests hold that list empty,
    so the names stay complete as the code changes."""
    files = [p for part in NODE_SOURCES for p in ([root / part] if part.endswith(".py") else sorted((root / part).rglob("*.py")))]
    names: set[str] = set()
    unread: list[str] = []
    for path in files:
        scan = _EventScan()
        scan.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        names |= scan.names
        unread += [f"{path.relative_to(root.parent)}:{line}" for line in scan.unread]
    return LoggedEvents(frozenset(names), tuple(unread))


class _EventScan(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()
        self.unread: list[int] = []
        self.params: list[set[str]] = [set()]  # the parameters of each enclosing function

    def _in_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        a = node.args
        self.params.append({p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)})
        self.generic_visit(node)
        self.params.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        if node.args and (called.endswith("log") or called == "warn"):
            self._read(node.args[0], node.lineno)
        self.generic_visit(node)

    def _read(self, arg: ast.expr, line: int) -> None:
        if isinstance(arg, ast.IfExp):
            self._read(arg.body, line)
            self._read(arg.orelse, line)
        elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            self.names.add(arg.value)
        elif not (isinstance(arg, ast.Name) and arg.id == "event" and "event" in self.params[-1]):
            self.unread.append(line)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "event" and isinstance(value, ast.Constant) and isinstance(value.value, str):
                self.names.add(value.value)
        self.generic_visit(node)


@functools.cache
def known_events() -> frozenset[str]:
    return logged_events().names | {UNPARSABLE}


def check_event(name: str) -> str:
    """`name`, if a node logs such an event; else ValueError naming the close ones."""
    known = known_events()
    if name in known:
        return name
    close = [n for n in sorted(known) if name in n] + difflib.get_close_matches(name, sorted(known), n=5)
    near = list(dict.fromkeys(close))[:8]
    hint = f"; close: {', '.join(near)}" if near else "; `logs` without --event shows every event"
    raise ValueError(f"no node logs an event named {name!r}{hint}")
