"""The run's timeline: the step counter every part of the simulation reads, and
the trace lines stamped with it (`python -m raftproc.sim --seed N` prints them).

Only the run loop (raftproc.sim.cluster) advances `now`; the network, the fault
injector, the checks and the hosts read it here, so the time of a run is kept in
one place.
"""

from __future__ import annotations

from collections.abc import Callable

from raftproc.core.messages import Message, describe

TraceFn = Callable[[str], None]


class Timeline:
    __slots__ = ("now", "_trace")

    def __init__(self, trace: TraceFn | None = None) -> None:
        self.now = 0
        self._trace = trace

    @property
    def tracing(self) -> bool:
        return self._trace is not None

    def note(self, text: str) -> None:
        """Something the simulation did (a fault, a restart, a check's finding)."""
        if self._trace is not None:
            self._trace(f"t={self.now} ** {text}")

    def delivered(self, msg: Message) -> None:
        if self._trace is not None:
            self._trace(f"t={self.now} {describe(msg)}")

    def node_event(self, event: str, **fields: object) -> None:
        """A node's own log line (RaftNode's `log` callable)."""
        if self._trace is None:
            return
        node = fields.pop("node")
        term = fields.pop("term")
        role = fields.pop("role")
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        self._trace(f"t={self.now}    node {node} [{role} t{term}] {event} {extra}".rstrip())
