"""What a leader knows about one follower's log.

A follower is in one of three states, as in etcd's raft:

- PROBE: the leader does not know where the logs match. It sends one AppendEntries
  at a time and waits for the answer (or the next heartbeat) before sending another,
  so a long mismatch is walked back once per round trip instead of flooding the peer.
- REPLICATE: the last answer was a success. The leader streams entries, advancing
  `next_index` optimistically as it sends, up to `max_inflight` entries beyond
  `match_index`. A lost message shows up as a rejection (a gap at the follower),
  which sends the follower back to PROBE.
- SNAPSHOT: the follower needs entries the leader has compacted. The host is
  streaming it a snapshot covering `pending_snapshot`; nothing else is sent but
  heartbeats until the follower acknowledges an index at or past it, or the host
  reports that the transfer failed (then PROBE again).

Invariant: match_index < next_index (entries up to match_index are known to match).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ProgressState(StrEnum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


PROBE = ProgressState.PROBE
REPLICATE = ProgressState.REPLICATE
SNAPSHOT = ProgressState.SNAPSHOT


@dataclass(slots=True)
class Progress:
    match_index: int = 0
    next_index: int = 1
    state: ProgressState = PROBE
    # In PROBE: an AppendEntries is out and unanswered; cleared by an answer or a heartbeat.
    probe_sent: bool = False
    # In SNAPSHOT: the index of the snapshot being sent.
    pending_snapshot: int = 0
    # Snapshot transfers started since the follower last accepted an append: a
    # follower that is down fails one per heartbeat, and logs say so only sparsely.
    snapshot_attempts: int = 0
    # The follower reported a history that contradicts ours (raftproc.core.divergence):
    # nothing more is sent to it while this leadership lasts.
    diverged: bool = False
    # The leader's read round (raftproc.core.reads) when match_index last moved: an
    # answer to a message of a later round comes from after that acknowledgement.
    match_round: int = 0

    def become_probe(self) -> None:
        self.state = PROBE
        self.probe_sent = False
        self.pending_snapshot = 0

    def become_snapshot(self, index: int) -> None:
        self.state = SNAPSHOT
        self.probe_sent = False
        self.pending_snapshot = index
        self.snapshot_attempts += 1

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_attempts = 0

    def on_success(self, match_index: int) -> bool:
        """Record that the follower matches up to `match_index`. Returns True when
        this told the leader something new (the match moved forward)."""
        advanced = match_index > self.match_index
        if advanced:
            self.match_index = match_index
        if self.next_index <= match_index:
            self.next_index = match_index + 1
        if self.state == PROBE or (self.state == SNAPSHOT and self.match_index >= self.pending_snapshot):
            self.become_replicate()
        return advanced

    def on_reject(self, next_index: int) -> None:
        """Fall back to probing from `next_index`, never behind what is known to match."""
        self.next_index = max(next_index, self.match_index + 1)
        self.become_probe()

    def inflight(self) -> int:
        return self.next_index - 1 - self.match_index
