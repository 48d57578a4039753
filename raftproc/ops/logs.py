"""Read the nodes' JSON logs as one time-ordered, readable stream."""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

FIRST_KEYS = ("ts", "node", "term", "role", "event", "level")


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            record = _parse(line)
            if record is not None:
                yield record


def _parse(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return {"ts": "", "event": "unparsable_log_line", "text": line[:200]}
    return record if isinstance(record, dict) else None


def merged(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every line of every file, ordered by timestamp (each file is already in order)."""
    return heapq.merge(*(read_lines(p) for p in paths), key=lambda r: str(r.get("ts", "")))


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


def follow(paths: list[Path], node: int | None, events: set[str] | None, poll: float = 0.2) -> Iterator[str]:
    """Tail the files forever (until interrupted), printing new matching lines."""
    offsets = {p: (p.stat().st_size if p.exists() else 0) for p in paths}
    while True:
        batch = []
        for p in paths:
            if not p.exists():
                continue
            with open(p, "rb") as f:
                f.seek(offsets[p])
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
            offsets[p] += end
            complete = chunk[:end].decode("utf-8", errors="replace")
            for line in complete.splitlines():
                record = _parse(line)
                if record is not None and matches(record, node, events):
                    batch.append(record)
        for record in sorted(batch, key=lambda r: str(r.get("ts", ""))):
            yield format_line(record)
        time.sleep(poll)


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
