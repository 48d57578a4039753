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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from raftproc.core.messages import AppendEntriesResponse, Entry, Message, SnapshotMeta
from raftproc.core.ready import ReadState, Ready

if TYPE_CHECKING:
    from raftproc.sim.cluster import SimNode, Simulation


class NodeCrashed(Exception):
    """The simulated process died in the middle of handling a Ready."""


class SimHost:
    __slots__ = ("sim", "sn", "_promised")

    def __init__(self, sim: Simulation, sn: SimNode) -> None:
        self.sim = sim
        self.sn = sn
        # Acknowledgements seen in a Ready, with the term of the entry at their
        # match_index then: by Log Matching that names the prefix they promise.
        self._promised: dict[int, tuple[Message, int | None]] = {}

    def on_ready(self, rd: Ready) -> None:
        node = self.sn.node
        assert node is not None
        for m in rd.messages:
            if isinstance(m, AppendEntriesResponse) and m.success:
                self._promised[id(m)] = (m, node.log.term_at(m.match_index))

    # --- transport --------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            noted = self._promised.pop(id(msg), None)
            self.sim._check_promise(self.sn, msg, noted[1] if noted is not None else None)
            self.sim._send(self.sn, msg)

    def flush(self) -> None:
        sim = self.sim
        if sim._crash_mid_ready > 0 and sim.rng.random() < sim._crash_mid_ready:
            # A leader's appends are out; its own write of them never happens.
            raise NodeCrashed

    # --- state machine ----------------------------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> None:
        sim, sn = self.sim, self.sn
        for e in entries:
            sim._check_applied(sn.id, sn.applied_index, e)
            sn.applied_index = e.index
            if e.index > len(sim.committed):
                sim.committed.append(e)
                sim.commit_terms.append(sn.node.current_term if sn.node else 0)

    def serve_reads(self, read_states: Sequence[ReadState]) -> None:
        for rs in read_states:
            self.sim._check_read(self.sn.id, rs)

    # --- snapshots --------------------------------------------------------------------

    def install(self, meta: SnapshotMeta) -> None:
        sim, sn = self.sim, self.sn
        data = sn.received.pop((meta.index, meta.term))
        sn.received.clear()
        sim._check_snapshot_data(sn.id, data)
        sn.storage.install_snapshot(meta, data)
        sn.applied_index = meta.index
        sim.stats.snapshots_installed += 1
        sim._note(f"node {sn.id} installs snapshot {meta.term}/{meta.index}")
