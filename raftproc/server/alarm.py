"""The divergence alarm (raftproc.core.divergence): this node's history differs
from a leader's, or, as leader, from a follower's. Acknowledged writes may be
lost; an operator must decide which side is right (docs/storage.md).

The alarm is kept in the data directory (raftproc.runtime.identity) so that a
restart does not forget it: a node that forgot it would vote and campaign again
on a history that contradicts the cluster's. Only a rebuild clears it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from raftproc.core.divergence import Divergence
from raftproc.core.node import RaftNode
from raftproc.runtime.identity import record_divergence, recorded_divergence

Log = Callable[..., None]


class DivergenceAlarm:
    def __init__(self, *, raft: RaftNode, data_dir: Path, sync: bool, log: Log) -> None:
        self.raft = raft
        self.data_dir = data_dir
        self.sync = sync
        self.log = log
        recorded = recorded_divergence(data_dir)
        if recorded is not None:
            raft.mark_diverged(Divergence(**recorded))
        self._recorded = raft.diverged is not None  # recorded already, or not yet diverged

    def describe(self) -> str | None:
        """Why the alarm is raised, or None."""
        r = self.raft
        if r.diverged is not None:
            return r.diverged.describe()
        if r.peer_divergences:
            found = ", ".join(f"node {p} at index {i}" for p, i in sorted(r.peer_divergences.items()))
            return f"followers report a history that differs from this node's log: {found}"
        return None

    def record(self) -> None:
        """After a Ready: a divergence the core found is made durable, once."""
        d = self.raft.diverged
        if d is None or self._recorded:
            return
        try:
            record_divergence(self.data_dir, dataclasses.asdict(d), sync=self.sync)
        except OSError as e:
            self.log("divergence_record_failed", level="error", error=str(e))
            return
        self._recorded = True
