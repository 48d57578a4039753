"""A leader's linearizable reads without a log write (Raft thesis §6.4).

ReadIndex: `RaftNode.read_index(request)` on the leader records its commit index
for the read and confirms it is still the leader with a round of heartbeats that
starts after the read arrived; once a majority answered that round the read comes
out in Ready.read_states and the host serves it when its state machine has
applied the index. Rounds number the leader's AppendEntries (`read_round`, echoed in
answers), so every read arriving between two broadcasts shares one round, and
ordinary replication traffic confirms them as well as heartbeats do. A leader
answers reads only after committing an entry of its own term: before that its
commit index may lag what its predecessors committed.

Lease (`read_index(request, lease=True)`, opt-in, needs check_quorum): no round
while the leader holds a lease: a majority acknowledged, within the last
`lease_ticks()` ticks, messages sent after a known tick, and each of them refuses
to vote for anyone else for election_timeout_min ticks after hearing from its
leader. The assumption: every node's clock runs within `max_clock_drift` of real
time. The lease is cut so that a leader whose clock runs that much slow ends it
before a follower whose clock runs that much fast ends its refusal:
lease * (1 + d) / (1 - d) <= election_timeout_min, less a margin of
LEASE_MARGIN_TICKS for tick granularity. A leadership transfer elects the new leader
without that wait, so a leader stops using its lease for the rest of its term
once it sends TimeoutNow.

`LeaderReads` holds this state for one leadership; the node decides when a read
may skip the round and feeds it the ticks, acknowledgements and membership.
"""

from __future__ import annotations

from raftproc.core.membership import Membership
from raftproc.core.messages import NodeId
from raftproc.core.ready import ReadState

# Ticks cut off a read lease before followers' vote-refusal window ends, to cover
# clocks (tick rates) that do not run exactly alike.
LEASE_MARGIN_TICKS = 2


def lease_ticks(election_timeout_min: int, max_clock_drift: float) -> int:
    """How many of the leader's ticks a lease lasts (0: no lease at all)."""
    scaled = int(election_timeout_min * (1 - max_clock_drift) / (1 + max_clock_drift))
    return max(scaled - LEASE_MARGIN_TICKS, 0)


_NEVER = -(10**9)


class LeaderReads:
    def __init__(self) -> None:
        # Invariant: every round in `acked` and `pending` is <= `round`.
        self.round = 0
        self.round_fresh = False  # no message of the current round has been sent yet
        self.round_started: dict[int, int] = {}  # round -> tick it started (recent rounds)
        self.acked: dict[NodeId, int] = {}  # peer -> the newest round it answered
        self.pending: list[tuple[int, int, int]] = []  # (round, request, index), rounds ascending
        self.before_commit: list[tuple[int, bool]] = []  # (request, lease) until a commit in the leader's term
        self.states: list[ReadState] = []  # confirmed, for the next Ready
        self.lease_given_up = False

    def new_round(self, ticks: int, keep_ticks: int) -> None:
        """Start a round at tick `ticks`; rounds older than `keep_ticks` are forgotten
        (no lease can rest on them any more)."""
        self.round += 1
        self.round_fresh = True
        self.round_started[self.round] = ticks
        horizon = ticks - keep_ticks
        while self.round_started and next(iter(self.round_started.values())) < horizon:
            del self.round_started[next(iter(self.round_started))]

    def ask(self, request: int, index: int, ticks: int, keep_ticks: int) -> None:
        """A read that waits for a round started after it arrived."""
        if not self.round_fresh:
            self.new_round(ticks, keep_ticks)
        self.pending.append((self.round, request, index))

    def on_ack(self, peer: NodeId, read_round: int, membership: Membership, me: NodeId) -> None:
        """Any answer in the leader's term, success or not, says `peer` still follows."""
        if read_round > self.acked.get(peer, 0) and read_round <= self.round:
            self.acked[peer] = read_round
            if self.pending:
                self._release(membership, me)

    def _release(self, membership: Membership, me: NodeId) -> None:
        confirmed = self._confirmed_round(membership, me)
        pending = self.pending
        done = 0
        while done < len(pending) and pending[done][0] <= confirmed:
            _, request, index = pending[done]
            self.states.append(ReadState(request, index))
            done += 1
        if done:
            del pending[:done]

    def _confirmed_round(self, membership: Membership, me: NodeId) -> int:
        """The newest round a majority (this leader included) has answered."""
        rounds = dict(self.acked)
        rounds[me] = self.round
        return membership.committed_index(rounds)

    def lease_holds(self, membership: Membership, me: NodeId, ticks: int, lease_ticks: int) -> bool:
        """A majority answered messages sent within the last `lease_ticks` ticks."""
        starts = {p: self.round_started.get(r, _NEVER) for p, r in self.acked.items()}
        starts[me] = ticks
        since = membership.committed_index(starts, default=_NEVER)
        return ticks < since + lease_ticks

    def forget(self, peer: NodeId) -> None:
        self.acked.pop(peer, None)

    def drop(self) -> None:
        """Leadership is gone (or begins): reads not yet handed out are the host's to fail."""
        self.pending = []
        self.before_commit = []
        self.acked = {}

    def take_states(self) -> tuple[ReadState, ...]:
        states, self.states = tuple(self.states), []
        return states
