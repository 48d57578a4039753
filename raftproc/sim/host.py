"""A simulated node's host: the in-memory twins the Ready driver
(raftproc.server.driver) works through in the simulator, as the node's host hands
it sockets, the WAL and the key-value store.

- transport: puts messages on the simulated network, after checking that what
  each promises is already in the node's durable storage (persist before promise);
  `flush`, which the driver calls after a Ready's early appends (and a leader's
  applies), before its own write, is where a process may die (the one window the
  contract leaves open);
- state machine: applies committed entries and serves confirmed reads, checking
  State Machine Safety and that each read covers what was committed before it;
- installer: installs a snapshot that arrived whole.

It works through what it is handed: the network (`Wire`), the run's checks
(raftproc.sim.properties), and the fault injector's say on dying mid-Ready
(`MidReadyDeaths`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftproc.core.messages import AppendEntriesResponse, Entry, Message, SnapshotMeta
from raftproc.core.ready import ReadState, Ready
from raftproc.sim.node import SimNode
from raftproc.sim.properties import PropertyChecker
from raftproc.sim.stats import SimStats
from raftproc.sim.timeline import Timeline


class NodeCrashed(Exception):
    """The simulated process died in the middle of handling a Ready."""


class Wire(Protocol):
    """Where a host puts the messages its node sends (raftproc.sim.network)."""

    def send(self, sender: SimNode, msg: Message) -> None: ...


class MidReadyDeaths(Protocol):
    """Whether a process dies in the window the contract leaves open (raftproc.sim.faults)."""

    def dies_mid_ready(self) -> bool: ...


class SimHost:
    __slots__ = ("sn", "_wire", "_checks", "_deaths", "_stats", "_timeline", "_promised")

    def __init__(
        self, sn: SimNode, *, wire: Wire, checks: PropertyChecker, deaths: MidReadyDeaths, stats: SimStats, timeline: Timeline
    ) -> None:
        self.sn = sn
        self._wire = wire
        self._checks = checks
        self._deaths = deaths
        self._stats = stats
        self._timeline = timeline
        # Acknowledgements seen in a Ready, with the term of the entry at their
        # match_index then: by Log Matching that names the prefix they promise.
        self._promised: dict[int, tuple[Message, int | None]] = {}

    def on_ready(self, rd: Ready) -> None:
        node = self.sn.raft
        for m in rd.messages:
            if isinstance(m, AppendEntriesResponse) and m.success:
                self._promised[id(m)] = (m, node.log.term_at(m.match_index))

    # --- transport --------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            noted = self._promised.pop(id(msg), None)
            self._checks.check_promise(self.sn, msg, noted[1] if noted is not None else None)
            self._wire.send(self.sn, msg)

    def flush(self) -> None:
        if self._deaths.dies_mid_ready():
            # A leader's appends are out; its own write of them never happens.
            raise NodeCrashed

    # --- state machine ----------------------------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> None:
        sn = self.sn
        for e in entries:
            self._checks.check_applied(sn.id, sn.applied_index, e, sn.node.current_term if sn.node else 0)
            sn.applied_index = e.index

    def serve_reads(self, read_states: Sequence[ReadState]) -> None:
        for rs in read_states:
            self._checks.check_read(self.sn.id, rs)

    # --- snapshots --------------------------------------------------------------------

    def install(self, meta: SnapshotMeta) -> None:
        sn = self.sn
        data = sn.received.pop((meta.index, meta.term))
        sn.received.clear()
        self._checks.check_snapshot_data(sn.id, data)
        sn.storage.install_snapshot(meta, data)
        sn.applied_index = meta.index
        self._stats.snapshots_installed += 1
        self._timeline.note(f"node {sn.id} installs snapshot {meta.term}/{meta.index}")
