"""The core's vocabulary shared with its hosts: roles, the node's RaftOptions, and the
exceptions its inputs raise."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from raftproc.core.messages import NodeId


def worth_logging(count: int) -> bool:
    """1, 2, 10, 100, 1000, ...: an event that repeats (a retry every heartbeat, a
    refusal per connection) is logged sparsely, and still shows it goes on."""
    return count <= 2 or str(count).rstrip("0") == "1"


class Role(StrEnum):
    """A node's role. A StrEnum: logs and status answers show the plain name."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


FOLLOWER = Role.FOLLOWER
PRE_CANDIDATE = Role.PRE_CANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER


class TransferInProgress(Exception):
    """propose() while the leader hands leadership to another node."""


class MembershipChangeRefused(Exception):
    """propose_membership() that the leader does not accept, with the reason."""


class MembershipChangeBusy(MembershipChangeRefused):
    """A change the leader accepts later: one is in flight, the leader has not
    committed in its term yet, or the learner to promote is still catching up."""


class NotLeader(Exception):
    """propose() on a node that is not the leader. `leader_id` is who it follows, if anyone."""

    def __init__(self, leader_id: NodeId | None) -> None:
        super().__init__(f"not the leader; leader is {leader_id}")
        self.leader_id = leader_id


@dataclass(frozen=True, slots=True)
class RaftOptions:
    """Timing in ticks. The defaults give 150-300 ms election timeouts and 50 ms
    heartbeats at a 10 ms tick."""

    election_timeout_min: int = 15
    election_timeout_max: int = 30  # exclusive
    heartbeat_interval: int = 5
    max_entries_per_message: int = 1024
    # ...and at most this many bytes of commands (one larger entry travels alone);
    # well below the transport's frame limit (etcd's MaxSizePerMsg is 1 MiB too).
    max_bytes_per_message: int = 1024 * 1024
    # REPLICATE mode stops sending new entries to a follower this far ahead of its match.
    max_inflight_entries: int = 8192
    # PreVote (thesis §9.6): ask before raising the term, so a node that was cut off
    # cannot force an election when it comes back.
    pre_vote: bool = True
    # A learner becomes a voter only with at most this many entries still to get,
    # so the change does not leave commits waiting on its catch-up.
    promote_lag_entries: int = 1000
    # CheckQuorum (thesis §6.2): a leader that has not heard from a majority for an
    # election timeout steps down; a node that heard from its leader within the
    # minimum election timeout ignores requests to vote in a higher term.
    check_quorum: bool = True
    # How far any node's clock rate may stray from real time, as a fraction (0.05:
    # between 0.95 and 1.05 ticks per tick interval). Read leases are shortened so
    # they stay safe with a leader's clock this slow and a follower's this fast
    # (raftproc.core.reads.lease_ticks); past the bound, lease reads may be stale.
    max_clock_drift: float = 0.05

    def __post_init__(self) -> None:
        if not 1 <= self.election_timeout_min < self.election_timeout_max:
            raise ValueError("need 1 <= election_timeout_min < election_timeout_max")
        # Raft needs broadcastTime << electionTimeout (§5.6); a third keeps a lost
        # heartbeat or two from starting an election.
        if not 1 <= self.heartbeat_interval <= self.election_timeout_min // 3:
            raise ValueError("heartbeat_interval must be between 1 and election_timeout_min / 3")
        if self.max_entries_per_message < 1 or self.max_inflight_entries < 1 or self.max_bytes_per_message < 1:
            raise ValueError("message and inflight limits must be positive")
        if not 0 <= self.max_clock_drift < 0.5:
            raise ValueError("max_clock_drift must be at least 0 and below 0.5")


class RoleError(Exception):
    """A role transition the caller must never ask for (a leader becoming a
    candidate, say): a bug in the caller, not bad input."""


class CommittedConflict(Exception):
    """A message contradicts an entry this node knows to be committed: the sender is
    broken or hostile. The node changed nothing for it; the host drops the sender's
    connection."""
