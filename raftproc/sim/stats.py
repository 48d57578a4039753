"""What a simulated run counts, for its summary line (raftproc.sim.__main__)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SimStats:
    seed: int
    nodes: int
    steps: int = 0
    leaders_elected: int = 0
    max_term: int = 0
    committed: int = 0
    proposals: int = 0
    crashes: int = 0
    partitions: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    reads_served: int = 0
    config_changes: int = 0
