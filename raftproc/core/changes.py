"""Membership changes on the leader: a part of RaftNode (raftproc.core.node),
kept apart so each file reads as one concern; raftproc.core.membership holds the
configurations themselves and their quorums.

`propose_membership(voters, learners)` appends the next configuration; every node
uses the newest one its log holds. Voters change through a joint configuration
that the leader leaves by itself once it commits. One change at a time: none is
accepted while the newest configuration entry is uncommitted or joint, nor before
the leader has committed an entry of its own term. New voters must have joined as
learners and caught up to within `promote_lag_entries`. A leader the committed
configuration leaves out hands over with TimeoutNow and steps down; a node that is
not a voter in its configuration never campaigns. Lease reads are off while a
change is in flight.
"""

from __future__ import annotations

from collections.abc import Iterable

from mypy_extensions import mypyc_attr

from raftproc.core.log import RaftLog
from raftproc.core.membership import Membership
from raftproc.core.messages import Entry, NodeId
from raftproc.core.progress import REPLICATE, Progress
from raftproc.core.reads import LeaderReads
from raftproc.core.types import (
    LEADER,
    MembershipChangeBusy,
    MembershipChangeRefused,
    NotLeader,
    RaftOptions,
    Role,
    TransferInProgress,
)


# RaftNode takes Python subclasses when compiled (see there), so its base must too.
@mypyc_attr(allow_interpreted_subclasses=True)
class MembershipChanges:
    """The membership half of RaftNode. The node's state it reads and changes is
    declared here (annotations only, so they stay plain instance attributes); the
    node's helpers it calls are defined by RaftNode (raftproc.core.node)."""

    # The node's state this half reads and changes.
    id: NodeId
    role: Role
    leader_id: NodeId | None
    current_term: int
    commit_index: int
    options: RaftOptions
    log: RaftLog
    progress: dict[NodeId, Progress]
    reads: LeaderReads
    transferee: NodeId | None
    peer_divergences: dict[NodeId, int]
    _broadcast_pending: bool

    @property
    def membership(self) -> Membership:
        return self.log.membership

    # The node's helpers this half calls, defined by RaftNode. Real methods rather than
    # annotations under TYPE_CHECKING: the compiled build (mypyc) dispatches them
    # through the class's method table, which needs them declared here.
    def become_follower(self, term: int, leader_id: NodeId | None) -> None:
        raise NotImplementedError

    def _check_not_in_ready(self) -> None:
        raise NotImplementedError

    def _log(self, event: str, **fields: object) -> None:
        raise NotImplementedError

    def _abort_transfer(self, why: str) -> None:
        raise NotImplementedError

    def _send_timeout_now(self, target: NodeId) -> None:
        raise NotImplementedError

    def propose_membership(
        self,
        voters: Iterable[NodeId],
        learners: Iterable[NodeId] = (),
        description: bytes | None = None,
    ) -> tuple[int, int]:
        """Move the cluster to the configuration `voters` + `learners` (see the
        module doc and raftproc.core.membership). Returns the (index, term) of the
        entry appended now: the whole change if only learners change, else the
        joint configuration, after which this leader appends the final one by
        itself. `description` travels in the entry for the host (addresses, say).
        Raises MembershipChangeRefused with the reason when the change must wait or
        is not allowed."""
        self._check_not_in_ready()
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if self.transferee is not None:
            raise TransferInProgress(f"leadership is being handed to node {self.transferee}")
        new_voters, new_learners = set(voters), set(learners)
        refusal = self._membership_change_refusal(new_voters, new_learners)
        if refusal is not None:
            raise refusal
        current = self.membership
        outgoing = () if new_voters == set(current.voters) else current.voters
        return self._append_membership(Membership(tuple(new_voters), outgoing, tuple(new_learners)), description)

    def _membership_change_refusal(self, voters: set[NodeId], learners: set[NodeId]) -> MembershipChangeRefused | None:
        current = self.membership
        if self.log.term_at(self.commit_index) != self.current_term:
            # The single-server change bug (Ongaro, raft-dev, 2015): until it commits
            # in its own term, a new leader may hold a configuration that an earlier
            # leader's uncommitted change, elsewhere, is about to replace.
            return MembershipChangeBusy("the leader has not committed an entry of its term yet; retry shortly")
        if self._membership_change_pending():
            return MembershipChangeBusy(
                f"a configuration change is still in progress ({current.describe()}, entry {self.log.config_index})"
            )
        if not voters:
            return MembershipChangeRefused("a cluster needs at least one voter")
        if voters & learners:
            return MembershipChangeRefused(f"nodes {sorted(voters & learners)} cannot be voters and learners at once")
        if learners & set(current.voters):
            return MembershipChangeRefused(
                f"nodes {sorted(learners & set(current.voters))} must stop voting (be removed) before they rejoin as learners"
            )
        strangers = voters - set(current.voters) - set(current.learners)
        if strangers:
            return MembershipChangeRefused(f"nodes {sorted(strangers)} must join as learners and catch up before they vote")
        for node in sorted(voters - set(current.voters)):
            pr = self.progress[node]
            behind = self.log.last_index - pr.match_index
            if pr.state != REPLICATE or behind > self.options.promote_lag_entries:
                # REPLICATE: it has accepted an append from this leader, so its log
                # really matches ours up to match_index (a silent node matches nothing).
                if pr.match_index == 0 and pr.state != REPLICATE:
                    return MembershipChangeBusy(
                        f"learner {node} has not answered this leader yet (is it running, and reachable at the address given?)"
                    )
                return MembershipChangeBusy(
                    f"learner {node} is {behind} entries behind the leader; promote it once it is within {self.options.promote_lag_entries}"
                )
        if voters == set(current.voters) and learners == set(current.learners):
            return MembershipChangeRefused(f"the cluster already has that configuration ({current.describe()})")
        return None

    def _append_membership(self, target: Membership, description: bytes | None) -> tuple[int, int]:
        entry = Entry(self.current_term, self.log.last_index + 1, description, target)
        self.log.append((entry,))  # in force from here on, committed or not (§6)
        self._log("config_change_appended", index=entry.index, membership=target.describe())
        self._sync_progress()
        if self.transferee is not None and self.transferee not in target.voters:
            self._abort_transfer("the target is no longer a voter")
        self._broadcast_pending = True
        return entry.index, entry.term

    def _replication_targets(self) -> set[NodeId]:
        """Every member, and while the newest configuration is uncommitted the members
        of the one before it too: a node being removed then receives the entry that
        removes it, and as a non-voter stays quiet instead of campaigning (§6's
        disruptive servers) when PreVote and CheckQuorum are off."""
        targets = set(self.membership.members)
        if self.log.config_index > self.commit_index:
            targets |= set(self.log.membership_at(self.log.config_index - 1).members)
        targets.discard(self.id)
        return targets

    def _sync_progress(self) -> None:
        targets = self._replication_targets()
        for peer in sorted(targets - set(self.progress)):
            self.progress[peer] = Progress(match_index=0, next_index=self.log.last_index + 1)
        for gone in set(self.progress) - targets:
            del self.progress[gone]
            self.reads.forget(gone)
            # Removed (to be rebuilt, say): its old history no longer raises the alarm.
            self.peer_divergences.pop(gone, None)

    def _advance_membership_change(self) -> None:
        """After a commit: a committed joint configuration is left for the new one;
        a leader that the committed configuration leaves out steps down (§6)."""
        if self.role != LEADER or self.log.config_index > self.commit_index:
            return
        self._sync_progress()  # nodes removed for good leave the replication set
        m = self.membership
        if m.is_joint:
            self._log("joint_config_committed", index=self.log.config_index, membership=m.describe())
            self._append_membership(Membership(m.voters, (), m.learners), None)
        elif self.id not in m.voters:
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        """This leader is not in the committed configuration. It hands over to a
        voter that holds its whole log, if one does (no election timeout of
        unavailability), then follows; as a non-voter it never campaigns again."""
        ready = [p for p in self.membership.voters if p in self.progress and self.progress[p].match_index == self.log.last_index]
        target = ready[0] if ready else None
        if target is not None:
            self._send_timeout_now(target)
        self._log("leader_removed", handed_to=target, membership=self.membership.describe())
        self.leader_id = None
        self.become_follower(self.current_term, None)

    def _membership_change_pending(self) -> bool:
        return self.membership.is_joint or self.log.config_index > self.commit_index
