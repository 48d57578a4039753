"""The words cluster control (raftproc.ops.cluster) and the operations built on it
(raftproc.ops.operations) share: a node process as the supervisor sees it, and the
error of a request the cluster cannot carry out."""

from __future__ import annotations

from dataclasses import dataclass


class ClusterError(Exception):
    pass


@dataclass
class NodeProcess:
    node_id: int
    pid: int | None
    state: str  # running | paused | dead | stale-pid | stopped
