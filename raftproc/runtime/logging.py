"""Structured JSON logs, one file per node.

Every line carries ts, node, term, role and event first (then the event's own
fields), so `jq`, the supervisor's `logs` command and people can all read them.
Events are snake_case facts: became_leader, wal_recovered, frame_error, ...
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from raftproc.core.types import worth_logging

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

StateFn = Callable[[], tuple[int, str]]


def configure(node_id: int, path: Path | None, level: str, state: StateFn) -> Callable[..., None]:
    """Set up structlog for this process and return `log(event, level="info", **fields)`.

    `state()` gives the node's current (term, role) for lines that do not carry them.
    """

    def dropped_line(lines: int) -> str:
        term, role = state()
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        return json.dumps(
            {"ts": now, "node": node_id, "term": term, "role": role, "event": "log_lines_dropped", "level": "warning", "lines": lines}
        )

    stream = sys.stderr if path is None else LossyFile(open(path, "a", buffering=1, encoding="utf-8"), dropped_line)  # noqa: SIM115

    def lead_with_raft_state(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> dict:
        term, role = state()
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
            "node": node_id,
            "term": event_dict.pop("term", term),
            "role": event_dict.pop("role", role),
            "event": event_dict.pop("event"),
            "level": method,
        }
        event_dict.pop("node", None)
        line.update(event_dict)
        return line

    structlog.configure(
        processors=[lead_with_raft_state, structlog.processors.JSONRenderer(default=str)],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(stream),  # type: ignore[arg-type]  # LossyFile writes and flushes as a TextIO does
        cache_logger_on_first_use=True,
    )
    logger = structlog.get_logger()
    methods = {name: getattr(logger, name) for name in LEVELS}

    def log(event: str, level: str = "info", **fields: Any) -> None:
        methods[level](event, **fields)

    return log


class LossyFile:
    """A log file that drops lines it cannot write (a full disk) instead of raising
    into whatever was being logged: the node must keep serving, and its log says
    afterwards how many lines were lost (`log_lines_dropped`)."""

    def __init__(self, file: Any, dropped_line: Callable[[int], str]) -> None:
        self.file = file
        self.dropped_line = dropped_line
        self.dropped = 0

    def write(self, text: str) -> None:
        try:
            if self.dropped:
                self.file.write(self.dropped_line(self.dropped) + "\n")
                self.dropped = 0
            self.file.write(text)
        except OSError:
            self.dropped += 1

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError:
            pass


# The core reports every event through one callable; these deserve more or less
# attention than the default info.
CORE_EVENT_LEVELS = {
    "commit_advanced": "debug",
    "log_diverged": "error",
    "peer_diverged": "error",
    "peer_log_regressed": "error",
    "log_truncated": "warning",
    "message_ignored": "warning",
}


def core_logger(log: Callable[..., None]) -> Callable[..., None]:
    def core_log(event: str, **fields: Any) -> None:
        log(event, level=CORE_EVENT_LEVELS.get(event, "info"), **fields)

    return core_log


class SparseLog:
    """A log for events a remote party can repeat at will (a malformed frame, an idle
    connection): each event name is written for its first FIRST occurrences, then at
    the 100th, 1000th, ..., with `occurrences` counting them all, so a flood of bad
    frames costs a few lines, not the disk."""

    FIRST = 20

    def __init__(self, log: Callable[..., None]) -> None:
        self.log = log
        self.counts: dict[str, int] = {}

    def __call__(self, event: str, **fields: Any) -> None:
        n = self.counts[event] = self.counts.get(event, 0) + 1
        if n <= self.FIRST or worth_logging(n):
            self.log(event, occurrences=n, **fields)
