"""RaftNode: leader election and log replication as a deterministic state machine.

Theory of operation
-------------------
Everything that happens to a node enters through three calls:

- `tick()`     one unit of logical time passed (the host decides how long a tick is);
- `step(msg)`  a message from a peer arrived;
- `propose(c)` a client wants command `c` replicated (leader only).

Everything the node wants done leaves through `ready()`, a `Ready` that the host
carries out as the contract in raftproc.core.ready says (what must be durable
before which message leaves, when it may apply) before handing it back with
`advance()`. The node never touches a socket, a file, a thread or the
clock, and its only randomness is the injected `random.Random`, so a seed replays
a run exactly. Rules are cited where they are enforced (§ numbers refer to the
Raft paper, "In Search of an Understandable Consensus Algorithm").

Per-role behaviour is a swapped method: `become_follower`, `become_candidate` and
`become_leader` set `self._tick_role`, the way etcd's raft sets `r.step`.

Linearizable reads without a log write (Raft thesis §6.4)
--------------------------------------------------------
ReadIndex and the opt-in read lease: raftproc.core.reads, whose state a leader
keeps in `self.reads`.

Leadership transfer (thesis §3.10)
----------------------------------
`transfer_leadership(target)` stops new proposals, brings the target's log up to
date, then sends it TimeoutNow; the target campaigns at once (no PreVote) and
voters grant it even within a leader's lease. If the target has not taken over
within an election timeout, the transfer is abandoned and proposals resume.

Membership changes (§6): raftproc.core.changes, a part of RaftNode.

Invariants (checked from outside by raftproc.core.invariants after every step):
- commit_index <= log.last_index, and commit_index never decreases while running.
- current_term never decreases; voted_for and leader_id are set at most once a term.
- a leader has voted for itself in its term.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable

from mypy_extensions import mypyc_attr

from raftproc.core.changes import MembershipChanges
from raftproc.core.divergence import Divergence, check_append, check_snapshot
from raftproc.core.log import ZERO_HASH, LogInvariantError, RaftLog
from raftproc.core.membership import Membership
from raftproc.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from raftproc.core.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from raftproc.core.reads import LeaderReads, lease_ticks
from raftproc.core.ready import HardState, ReadState, Ready
from raftproc.core.types import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    CommittedConflict,
    NotLeader,
    RaftOptions,
    Role,
    RoleError,
    TransferInProgress,
    worth_logging,
)

LogFn = Callable[..., None]


def _no_log(event: str, **fields: object) -> None:
    return None


# Compiled, the class still takes Python subclasses: the simulator's planted-bug tests subclass the node to break one rule each.
@mypyc_attr(allow_interpreted_subclasses=True)
class RaftNode(MembershipChanges):
    def __init__(
        self,
        node_id: NodeId,
        voters: Iterable[NodeId] | Membership,
        *,
        rng: random.Random,
        options: RaftOptions | None = None,
        hard_state: HardState | None = None,
        entries: Iterable[Entry] = (),
        snapshot: SnapshotMeta | None = None,
        applied: int = 0,
        log: LogFn = _no_log,
    ) -> None:
        """Build a node, or rebuild one from what it persisted (`hard_state`, the
        newest `snapshot` and the `entries` after it).

        `voters` is the configuration the cluster was bootstrapped with, in force
        until the log or the snapshot holds another (raftproc.core.membership). A
        node that is not a voter in its configuration (a learner, a node joining
        with an empty log, a removed one) never starts an election.

        `applied` is how much of the log the host's state machine already holds (at
        least the snapshot it restored); committed entries after it are handed out
        again through ready().
        """
        self.id = node_id
        self.options = options or RaftOptions()
        self._rng = rng
        self._log_fn = log

        hs = hard_state or HardState()
        self._recover(voters, hs, entries, snapshot, applied)
        self.role: Role = FOLLOWER
        self.leader_id: NodeId | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self._recent_active: set[NodeId] = set()  # leader: peers heard since the last quorum check
        self._outbox: list[Message] = []
        self._broadcast_pending = False
        self._heartbeat_pending = False
        self._ticks = 0  # ticks since start: the clock of read leases
        self._restarted = hs.current_term > 0
        self.reads = LeaderReads()  # leader: ReadIndex rounds and the lease (raftproc.core.reads)
        # Leader: leadership transfer in progress to this node, for this many ticks.
        self.transferee: NodeId | None = None
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        self._in_ready = False
        self._tick_role = self._tick_election
        # This node's log contradicts a leader's (raftproc.core.divergence): it then
        # follows, votes and campaigns for nobody. Peers that reported the same to us
        # as leader, with the index: an alarm the host shows until restart.
        self.diverged: Divergence | None = None
        self.peer_divergences: dict[NodeId, int] = {}
        self._reset_election_timer()

    def _recover(
        self, voters: Iterable[NodeId] | Membership, hs: HardState, entries: Iterable[Entry], snapshot: SnapshotMeta | None, applied: int
    ) -> None:
        """The log, term, vote and indexes from what the node persisted."""
        bootstrap = voters if isinstance(voters, Membership) else Membership(tuple(voters))
        snap = snapshot or SnapshotMeta(0, 0, bootstrap)
        self.log = RaftLog(
            entries,
            snapshot_index=snap.index,
            snapshot_term=snap.term,
            membership=snap.membership,
            snapshot_hash=snap.hash if snap.index else ZERO_HASH,
        )
        self.current_term = hs.current_term
        self.voted_for: NodeId | None = hs.voted_for
        # A persisted commit index is only a hint; never trust it past the log we
        # found. A snapshot only ever holds committed entries.
        self.commit_index = max(min(hs.commit_index, self.log.last_index), snap.index)
        self.applied = max(min(applied, self.commit_index), snap.index)
        self._pending_snapshot: SnapshotMeta | None = None
        self._persisted_hard_state = hs

    @property
    def voters(self) -> tuple[NodeId, ...]:
        """Every node whose vote counts now (both halves of a joint configuration)."""
        return self.log.membership.all_voters

    @property
    def peers(self) -> tuple[NodeId, ...]:
        """Every other member, learners included: whom a leader replicates to."""
        return tuple(m for m in self.log.membership.members if m != self.id)

    def is_voter(self) -> bool:
        return self.log.membership.is_voter(self.id)

    # --- inputs ---------------------------------------------------------------

    def tick(self, elapsed: int = 1) -> None:
        """One tick of the role's timers. `elapsed` (>= 1) is how many tick
        intervals really passed: a host that was paused says so, and the read
        lease, which must never outlive real time, counts them all."""
        self._check_not_in_ready()
        self._ticks += max(1, elapsed)
        self._tick_role()

    def step(self, msg: Message) -> None:
        self._check_not_in_ready()
        # Any sender is heard, member or not: a node's configuration may lag the
        # leader's (a joining node knows no one yet). Votes count only from voters,
        # and a leader answers only the members it tracks.
        if msg.dst != self.id or msg.src == self.id:
            self._log("message_ignored", reason="not for this node", src=msg.src, dst=msg.dst)
            return
        if msg.term > self.current_term:
            if isinstance(msg, RequestVote) and not msg.transfer and self._in_lease():
                # §6 (disruptive servers): a live leader was heard within the minimum
                # election timeout; a request to replace it is ignored, term and all.
                self._log("vote_rejected", candidate=msg.src, reason="leader lease", pre_vote=msg.pre_vote)
                return
            if not self._is_pre_vote_traffic(msg):
                # §5.1: a higher term always wins. The sender of an AppendEntries or
                # InstallSnapshot in that term is its leader; anyone else is not
                # known to lead yet.
                leader = msg.src if isinstance(msg, (AppendEntries, InstallSnapshot)) else None
                self.become_follower(msg.term, leader)
        elif msg.term < self.current_term:
            self._answer_stale(msg)
            return
        if self.role == LEADER:
            self._recent_active.add(msg.src)
        match msg:
            case RequestVote():
                self._handle_request_vote(msg)
            case RequestVoteResponse():
                self._handle_vote_response(msg)
            case AppendEntries():
                self._handle_append_entries(msg)
            case AppendEntriesResponse():
                self._handle_append_response(msg)
            case InstallSnapshot():
                self._handle_install_snapshot(msg)
            case TimeoutNow():
                self._handle_timeout_now(msg)
            case _:
                raise TypeError(f"not a raft message: {msg!r}")

    def _in_lease(self) -> bool:
        if not self.options.check_quorum:
            return False
        if self._restarted and self._ticks < self.options.election_timeout_min:
            # Just restarted: a leader may count on our refusal from before the
            # crash for its read lease, so honour it for one minimum timeout.
            return True
        return self.role in (FOLLOWER, LEADER) and self.leader_id is not None and self.election_elapsed < self.options.election_timeout_min

    @staticmethod
    def _is_pre_vote_traffic(msg: Message) -> bool:
        """A pre-vote request, or a granted pre-vote, carries the term the candidate
        would use; neither side has moved to it, so it must not move us."""
        if isinstance(msg, RequestVote):
            return msg.pre_vote
        return isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.vote_granted

    def propose(self, command: bytes) -> tuple[int, int]:
        """Append `command` to the leader's log. Returns its (index, term): the command
        took effect exactly when the entry applied at that index has that term."""
        self._check_not_in_ready()
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if self.transferee is not None:
            raise TransferInProgress(f"leadership is being handed to node {self.transferee}")
        if not isinstance(command, bytes):
            raise TypeError("a command is bytes")
        entry = Entry(self.current_term, self.log.last_index + 1, command)
        self.log.append((entry,))
        self._broadcast_pending = True
        return entry.index, entry.term

    def read_index(self, request: int, *, lease: bool = False) -> None:
        """Ask for a linearizable read, named `request` by the host; it comes back in
        Ready.read_states with the index to wait for (see the module doc)."""
        self._check_not_in_ready()
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if self.log.term_at(self.commit_index) != self.current_term:
            self.reads.before_commit.append((request, lease))
            return
        self._start_read(request, lease)

    def _start_read(self, request: int, lease: bool) -> None:
        if self.membership.has_quorum((self.id,)) or (lease and self._lease_valid()):
            self.reads.states.append(ReadState(request, self.commit_index))
            return
        self.reads.ask(request, self.commit_index, self._ticks, self.options.election_timeout_max)
        self._broadcast_pending = True
        self._heartbeat_pending = True

    def _new_round(self) -> None:
        self.reads.new_round(self._ticks, self.options.election_timeout_max)

    def _lease_valid(self) -> bool:
        """A majority answered messages sent recently enough that none of them will
        vote for another leader yet (check_quorum's vote refusal)."""
        if not self.options.check_quorum or self.reads.lease_given_up or self._membership_change_pending():
            # While the configuration changes, the majority whose vote refusal the
            # lease counts on may not be the one that elects the next leader.
            return False
        ticks = lease_ticks(self.options.election_timeout_min, self.options.max_clock_drift)
        return ticks > 0 and self.reads.lease_holds(self.membership, self.id, self._ticks, ticks)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to `target` (see the module doc). Raises NotLeader on a
        follower, ValueError for a target that is not another voter."""
        self._check_not_in_ready()
        if self.role != LEADER:
            raise NotLeader(self.leader_id)
        if target == self.id or target not in self.membership.voters:
            raise ValueError(f"node {target} is not another voter of this cluster")
        if self.progress[target].diverged:
            raise ValueError(f"node {target} reported a history that contradicts this leader's: it cannot lead")
        self.transferee = target
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        self._log("leadership_transfer_started", target=target, match_index=self.progress[target].match_index)
        if self.progress[target].match_index == self.log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def _send_timeout_now(self, target: NodeId) -> None:
        # The target may win without waiting out our followers' vote refusal, so
        # our lease is worth nothing from here on.
        self.reads.lease_given_up = True
        self._timeout_now_sent = True  # once per transfer; later acks need no second one
        self._log("timeout_now_sent", target=target)
        self._send(TimeoutNow(src=self.id, dst=target, term=self.current_term))

    def _abort_transfer(self, why: str) -> None:
        if self.transferee is not None:
            self._log("leadership_transfer_aborted", target=self.transferee, reason=why)
        self.transferee = None

    def _handle_timeout_now(self, msg: TimeoutNow) -> None:
        if self.role == LEADER or not self.is_voter() or self.diverged is not None:
            return
        self._log("leadership_transfer_received", leader=msg.src)
        self.become_candidate()
        if self.membership.vote_won(self.votes):
            self.become_leader()
            return
        self._request_votes(self.current_term, pre_vote=False, transfer=True)

    def step_down(self, reason: str) -> None:
        """The host asks a leader to stop leading (its disk cannot keep up with the
        election timeout, say). It becomes a follower in the same term, knowing no
        leader, and campaigns again only when its election timer runs out."""
        self._check_not_in_ready()
        if self.role != LEADER:
            return
        self._log("leader_stepped_down", reason=reason)
        self.leader_id = None
        self.become_follower(self.current_term, None)

    def report_unreachable(self, peer: NodeId) -> None:
        """The host lost its connection to `peer`, so what was in flight to it may be
        gone. A leader that was streaming entries (REPLICATE) probes again from the
        last index known to match, as etcd's raft does on MsgUnreachable. A peer
        being probed had one probe in flight, which the next heartbeat resends from
        the same place: falling back to match + 1 there would restart a new
        leader's probe (match 0) from index 1 and resend the whole log."""
        pr = self.progress.get(peer) if self.role == LEADER else None
        if pr is not None and pr.state == REPLICATE:
            pr.next_index = pr.match_index + 1
            pr.become_probe()
        elif pr is not None and pr.state == PROBE:
            pr.probe_sent = False

    def report_snapshot(self, peer: NodeId, *, success: bool) -> None:
        """The host finished streaming a snapshot to `peer` (success: the follower
        has the whole file) or gave up on it. Either way the leader probes again: on
        success just past the snapshot, where the follower's answer to installing it
        will meet it; on failure from the last known match, which leads back to a
        fresh snapshot if the follower still needs one."""
        self._check_not_in_ready()
        pr = self.progress.get(peer) if self.role == LEADER else None
        if pr is None or pr.state != SNAPSHOT:
            return
        pending = pr.pending_snapshot
        pr.become_probe()
        if success or worth_logging(pr.snapshot_attempts):
            self._log("snapshot_reported", peer=peer, index=pending, success=success, attempts=pr.snapshot_attempts)
        if success:
            pr.next_index = max(pr.match_index, pending) + 1
            self._send_append(peer)
        else:
            # Retry from the next heartbeat: a transport that fails at once (peer
            # down) must not be handed a new snapshot in the same breath, forever.
            pr.next_index = pr.match_index + 1
            pr.probe_sent = True

    def compact(self, index: int) -> None:
        """The host holds a durable snapshot of the state machine through `index`:
        the entries up to it leave memory. Only applied entries can be in a snapshot,
        and only durable ones (`log.stable_index`): with background syncing a
        committed entry may be applied before the write that put it in the log (and
        truncated a stale tail after it) is durable; a snapshot past that write
        would come back after a power cut followed by the stale tail."""
        self._check_not_in_ready()
        if index > self.applied:
            raise LogInvariantError(f"compaction to {index} past the applied index {self.applied}")
        if index > self.log.stable_index:
            raise LogInvariantError(f"compaction to {index} past the durable index {self.log.stable_index}")
        before = self.log.snapshot_index
        self.log.compact(index)
        if self.log.snapshot_index > before:
            self._log("log_compacted", snapshot_index=index, entries_left=len(self.log))

    # --- output ---------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether ready() has anything to hand out. A question: it changes nothing
        (a broadcast still to flush counts; ready() flushes it)."""
        return bool(
            self._outbox
            or (self._broadcast_pending and self.role == LEADER)
            or self.reads.states
            or self._pending_snapshot is not None
            or self.log.written_index < self.log.last_index
            or self._hard_state_changed()
            or self.applied < self.commit_index
        )

    def ready(self) -> Ready:
        self._check_not_in_ready()
        self._flush_broadcast()
        rd = Ready(
            snapshot=self._pending_snapshot,
            hard_state=self._hard_state() if self._hard_state_changed() else None,
            entries=self.log.unstable(),
            messages=tuple(self._outbox),
            committed_entries=self.log.slice(self.applied + 1, self.commit_index + 1),
            read_states=self.reads.take_states(),
        )
        self._outbox = []
        self._pending_snapshot = None
        self._in_ready = True
        return rd

    def advance(self, rd: Ready, *, persisted: bool = True) -> None:
        """The host has carried out `rd` (the contract in raftproc.core.ready).

        `persisted=False`: the host syncs in the background. Its writes are handed
        over (the next Ready will not repeat them) but not yet durable: the host
        holds back the messages that must wait (split_messages) and calls
        persisted() once the sync is done.
        """
        self._in_ready = False
        if rd.hard_state is not None:
            self._persisted_hard_state = rd.hard_state
        if rd.entries:
            self.log.written_index = max(self.log.written_index, rd.entries[-1].index)
        if rd.committed_entries:
            self.applied = rd.committed_entries[-1].index
        if persisted and rd.entries:
            self.persisted(rd.entries[-1].index, rd.entries[-1].term)

    def persisted(self, index: int, term: int) -> None:
        """Entries up to `index`, whose entry there has `term`, are durable. A report
        about entries a later truncation replaced (the term differs) is ignored: the
        write of their replacements reports for them."""
        if self.log.term_at(index) != term or index > self.log.written_index:
            return
        if index > self.log.stable_index:
            self.log.stable_index = index
            if self.role == LEADER:
                # The leader counts itself toward a quorum only for entries on its disk.
                self._maybe_commit()

    # --- role transitions --------------------------------------------------------

    def become_follower(self, term: int, leader_id: NodeId | None) -> None:
        was = self.role
        if was == LEADER:
            self.reads.drop()
            self.transferee = None
        if term > self.current_term:
            self.current_term = term
            self.voted_for = None
            self.leader_id = None
        self.role = FOLLOWER
        if leader_id is not None:
            self.leader_id = leader_id
        self._tick_role = self._tick_election
        self.progress = {}
        self._reset_election_timer()
        if was != FOLLOWER or leader_id is not None:
            self._log("became_follower", leader=self.leader_id, previous_role=was)

    def become_pre_candidate(self) -> None:
        """Ask for votes in term + 1 without taking it: the term, the vote and the
        log stay as they are until a majority says it would vote for us."""
        if self.role == LEADER:
            raise RoleError("a leader does not become a pre-candidate")
        self._open_ballot(PRE_CANDIDATE)
        self._log("pre_vote_started", last_log_index=self.log.last_index, last_log_term=self.log.last_term)
        self._request_votes(self.current_term + 1, pre_vote=True)

    def become_candidate(self) -> None:
        if self.role == LEADER:
            raise RoleError("a leader does not become a candidate")
        self.current_term += 1
        self.voted_for = self.id  # §5.2: a candidate votes for itself
        self._open_ballot(CANDIDATE)
        self._log("election_started", last_log_index=self.log.last_index, last_log_term=self.log.last_term)

    def _open_ballot(self, role: Role) -> None:
        """Become (pre-)candidate: follow nobody, count our own vote, and time the round.
        The caller logs the event by name, so `supervisor.py logs --event` knows it."""
        self.role = role
        self.leader_id = None
        self._tick_role = self._tick_election
        self.votes = {self.id: True}
        self._reset_election_timer()

    def become_leader(self) -> None:
        if self.role != CANDIDATE:
            raise RoleError("only a candidate becomes leader")
        self.role = LEADER
        self.leader_id = self.id
        self._tick_role = self._tick_heartbeat
        self.heartbeat_elapsed = 0
        self.election_elapsed = 0
        self._recent_active = set()
        self.reads.drop()
        self.reads.lease_given_up = False
        self._new_round()
        self.transferee = None
        last = self.log.last_index
        self.progress = {}
        self._sync_progress()
        # §8: a no-op of the new term lets the leader commit, and so learn, everything
        # committed before it (§5.4.2 forbids counting replicas of older terms).
        self.log.append((Entry(self.current_term, last + 1, None),))
        self._log("became_leader", last_log_index=last + 1)
        self._broadcast_pending = True
        self._maybe_commit()

    # --- ticks -------------------------------------------------------------------

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout:
            if not self.is_voter() or self.diverged is not None:
                # A learner, a joining node, a removed or a diverged one waits to be told.
                self._reset_election_timer()
                return
            if self.options.pre_vote and len(self.voters) > 1:
                self.become_pre_candidate()
            else:
                self._campaign()

    def _tick_heartbeat(self) -> None:
        self.election_elapsed += 1
        if self.transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.options.election_timeout_max:
                self._abort_transfer("target did not take over within an election timeout")
        if self.options.check_quorum and self.election_elapsed >= self.options.election_timeout_min:
            self.election_elapsed = 0
            heard = self._recent_active | {self.id}
            self._recent_active = set()
            if not self.membership.has_quorum(heard):
                self._log("leader_stepped_down", reason="no quorum heard within an election timeout", heard=len(heard))
                self.leader_id = None
                self.become_follower(self.current_term, None)
                return
        self.heartbeat_elapsed += 1
        if self.heartbeat_elapsed >= self.options.heartbeat_interval:
            self.heartbeat_elapsed = 0
            self._new_round()  # heartbeats renew the read lease
            self._heartbeat_all()

    def _heartbeat_all(self) -> None:
        self._heartbeat_pending = False
        for peer in self.progress:
            self._send_append(peer, heartbeat=True)

    def _reset_election_timer(self) -> None:
        self.election_elapsed = 0
        cfg = self.options
        self.randomized_election_timeout = self._rng.randrange(cfg.election_timeout_min, cfg.election_timeout_max)

    def campaign(self) -> None:
        """Start an election now, as an election timeout would (§5.2)."""
        self._check_not_in_ready()
        if self.role == LEADER or not self.is_voter():
            return
        self._campaign()

    def _campaign(self) -> None:
        # §5.2: on election timeout, start a new term and ask everyone for a vote.
        self.become_candidate()
        if self.membership.vote_won(self.votes):
            self.become_leader()
            return
        self._request_votes(self.current_term, pre_vote=False)

    def _request_votes(self, term: int, *, pre_vote: bool, transfer: bool = False) -> None:
        for peer in self.voters:
            if peer == self.id:
                continue
            self._send(
                RequestVote(
                    src=self.id,
                    dst=peer,
                    term=term,
                    last_log_index=self.log.last_index,
                    last_log_term=self.log.last_term,
                    pre_vote=pre_vote,
                    transfer=transfer,
                )
            )

    # --- votes -------------------------------------------------------------------

    def _handle_request_vote(self, msg: RequestVote) -> None:
        if msg.pre_vote:
            self._handle_pre_vote(msg)
            return
        reason = self._vote_refusal(msg)
        granted = reason is None
        if granted:
            self.voted_for = msg.src
            # §5.2: granting a vote resets the election timer, so that voters do not
            # race the candidate they just backed.
            self._reset_election_timer()
            self._log("vote_granted", candidate=msg.src)
        else:
            self._log("vote_rejected", candidate=msg.src, reason=reason)
        self._send(RequestVoteResponse(src=self.id, dst=msg.src, term=self.current_term, vote_granted=granted))

    def _vote_refusal(self, msg: RequestVote) -> str | None:
        """Why this node must not vote for msg.src in this term, or None to grant."""
        if self.diverged is not None:
            return "this node's log diverged: it votes for nobody"
        if not self._may_vote_for(msg.src):
            return f"already voted for {self.voted_for}"
        if not self.log.is_up_to_date(msg.last_log_index, msg.last_log_term):
            return "candidate log not up to date"
        return None

    def _may_vote_for(self, candidate: NodeId) -> bool:
        # §5.2: at most one vote per term, first come first served.
        return self.voted_for is None or self.voted_for == candidate

    def _handle_pre_vote(self, msg: RequestVote) -> None:
        """Would we vote for msg.src in msg.term? Nothing here changes our state."""
        granted = msg.term > self.current_term and self.log.is_up_to_date(msg.last_log_index, msg.last_log_term) and not self.diverged
        self._log("pre_vote_granted" if granted else "pre_vote_rejected", candidate=msg.src, for_term=msg.term)
        # A grant names the term it is for; a refusal carries ours, so a candidate
        # that is behind learns the newer term.
        answer_term = msg.term if granted else self.current_term
        self._send(RequestVoteResponse(src=self.id, dst=msg.src, term=answer_term, vote_granted=granted, pre_vote=True))

    def _handle_vote_response(self, msg: RequestVoteResponse) -> None:
        if msg.pre_vote:
            if self.role != PRE_CANDIDATE or (msg.vote_granted and msg.term != self.current_term + 1):
                return  # not asking now, or a grant from an earlier round
            self.votes.setdefault(msg.src, msg.vote_granted)
            if self.membership.vote_won(self.votes):
                self._campaign()
            return
        if self.role != CANDIDATE:
            return
        self.votes.setdefault(msg.src, msg.vote_granted)
        if self.membership.vote_won(self.votes):
            self.become_leader()

    # --- replication: follower side ---------------------------------------------

    def _handle_append_entries(self, msg: AppendEntries) -> None:
        # Same term: whoever sends AppendEntries is the term's one leader (§5.2).
        if self.role != FOLLOWER or self.leader_id != msg.src:
            self.become_follower(self.current_term, msg.src)
        self._reset_election_timer()
        if self.diverged is not None:
            self.leader_id = None  # it follows nobody, whoever writes to it
            self._reject_append(msg, None, diverged=True)
            return
        if msg.prev_log_index < self.log.snapshot_index:
            past_snapshot = self._skip_compacted(msg)
            if past_snapshot is None:
                return
            msg = past_snapshot
        prev = msg.prev_log_index
        local_term = self.log.term_at(prev)
        if local_term != msg.prev_log_term:
            self._reject_append(msg, local_term)
            return
        divergence = check_append(self.log, msg, self.commit_index)
        if divergence is not None:
            self._diverge(divergence)
            self._reject_append(msg, local_term, diverged=True)
            return
        last_new = self._append_from_leader(msg)
        self._follower_commit(msg.leader_commit, last_new)
        self._send(self._answer_append(msg.src, success=True, match_index=last_new, read_round=msg.read_round))

    def _skip_compacted(self, msg: AppendEntries) -> AppendEntries | None:
        """An append that starts inside our snapshot. Everything the snapshot covers is
        committed, so the leader's log agrees with it (Leader Completeness): keep only
        the entries past it, as if the leader had sent those from the snapshot on. With
        nothing past it, acknowledge what we know matches: our commit index."""
        skip = self.log.snapshot_index - msg.prev_log_index
        if len(msg.entries) <= skip:
            self._send(self._answer_append(msg.src, success=True, match_index=self.commit_index, read_round=msg.read_round))
            return None
        return dataclasses.replace(
            msg,
            prev_log_index=self.log.snapshot_index,
            prev_log_term=self.log.snapshot_term,
            entries=msg.entries[skip:],
            prev_log_hash=None,  # the leader's link here is not in the message; the entries' bytes still are
        )

    def _handle_install_snapshot(self, msg: InstallSnapshot) -> None:
        if self.role != FOLLOWER or self.leader_id != msg.src:
            self.become_follower(self.current_term, msg.src)
        self._reset_election_timer()
        snap = msg.snapshot
        divergence = self.diverged or check_snapshot(self.log, snap, msg.src, self.commit_index)
        if divergence is not None:
            self._diverge(divergence)
            self._send(self._answer_append(msg.src, success=False, rejected_index=snap.index, diverged=True))
            return
        if snap.index <= self.commit_index:
            self._log("snapshot_ignored", index=snap.index, reason="already committed", commit_index=self.commit_index)
        elif self.log.term_at(snap.index) == snap.term:
            # Figure 13 step 6: our log holds the snapshot's last entry, so by Log
            # Matching everything before it; what follows may be entries we
            # acknowledged and a majority counts on. Keep it all, and apply from the
            # log as usual.
            self._log("snapshot_ignored", index=snap.index, reason="log already holds it")
            self._follower_commit(snap.index, snap.index)
        else:
            self._restore(snap)
        self._send(self._answer_append(msg.src, success=True, match_index=self.commit_index))

    def _restore(self, snap: SnapshotMeta) -> None:
        """Figure 13 step 7: discard the whole log; the snapshot replaces it."""
        self._log("snapshot_restored", index=snap.index, snapshot_term=snap.term, dropped_to=self.log.last_index)
        self.log.restore(snap.index, snap.term, snap.membership, snap.hash)
        self.commit_index = self.applied = snap.index
        self._pending_snapshot = snap

    def _append_from_leader(self, msg: AppendEntries) -> int:
        """Store msg.entries after a matching prev_log_index; return the index of the
        last entry the message carried.

        Truncate only on a real conflict. A duplicated or reordered AppendEntries may
        carry entries we hold already, followed in our log by later entries from the
        same leader that we have acknowledged; cutting those would lose entries a
        majority was counted on (§5.3: "if an existing entry conflicts with a new one").
        """
        for offset, entry in enumerate(msg.entries):
            local_term = self.log.term_at(entry.index)
            if local_term == entry.term:
                continue
            if local_term is not None:
                if entry.index <= self.commit_index:
                    raise CommittedConflict(f"leader {msg.src} conflicts with committed entry {entry.index}")
                self._log("log_truncated", from_index=entry.index, leader=msg.src)
                self.log.truncate_from(entry.index)
            self.log.append(msg.entries[offset:])
            break
        return msg.prev_log_index + len(msg.entries)

    def _follower_commit(self, leader_commit: int, last_new: int) -> None:
        # Figure 2: commitIndex = min(leaderCommit, index of last new entry). Past
        # last_new our log may still hold another leader's entries.
        commit = min(leader_commit, last_new)
        if commit > self.commit_index:
            self.commit_index = commit
            self._log("commit_advanced", commit_index=commit)

    def mark_diverged(self, divergence: Divergence) -> None:
        """The host found the alarm recorded before a restart: the log still
        contradicts the cluster's, so the node goes on following nobody."""
        self._check_not_in_ready()
        self._diverge(divergence)

    def _diverge(self, divergence: Divergence) -> None:
        """Keep the log as evidence and follow nobody (raftproc.core.divergence)."""
        if self.diverged is None:
            self.diverged = divergence
            self._log(
                "log_diverged",
                index=divergence.index,
                local_term=divergence.local_term,
                leader_term=divergence.leader_term,
                leader=divergence.leader,
                reason=divergence.reason,
            )
        self.leader_id = None

    def _reject_append(self, msg: AppendEntries, local_term: int | None, *, diverged: bool = False) -> None:
        if local_term is None:
            conflict_term, conflict_index = None, self.log.last_index + 1
        else:
            conflict_term, conflict_index = local_term, self.log.first_index_of_term(msg.prev_log_index)
        self._log(
            "append_rejected",
            leader=msg.src,
            prev_log_index=msg.prev_log_index,
            prev_log_term=msg.prev_log_term,
            conflict_term=conflict_term,
            conflict_index=conflict_index,
        )
        self._send(
            self._answer_append(
                msg.src,
                success=False,
                rejected_index=msg.prev_log_index,
                conflict_term=conflict_term,
                conflict_index=conflict_index,
                read_round=msg.read_round,
                diverged=diverged,
            )
        )

    def _answer_append(
        self,
        leader: NodeId,
        *,
        success: bool,
        match_index: int = 0,
        rejected_index: int = 0,
        conflict_term: int | None = None,
        conflict_index: int = 0,
        read_round: int = 0,
        diverged: bool = False,
    ) -> AppendEntriesResponse:
        """This node's answer to an append or a snapshot from `leader` (the fields
        are explained on messages.AppendEntriesResponse)."""
        return AppendEntriesResponse(
            src=self.id,
            dst=leader,
            term=self.current_term,
            success=success,
            match_index=match_index,
            rejected_index=rejected_index,
            conflict_term=conflict_term,
            conflict_index=conflict_index,
            read_round=read_round,
            diverged=diverged,
        )

    # --- replication: leader side -------------------------------------------------

    def _handle_append_response(self, msg: AppendEntriesResponse) -> None:
        if self.role != LEADER:
            return
        self.reads.on_ack(msg.src, msg.read_round, self.membership, self.id)
        pr = self.progress.get(msg.src)
        if pr is None:
            return  # not (or no longer) a member we replicate to
        if msg.match_index > self.log.last_index:
            # No follower can match entries this leader never had: a confused peer.
            self._log("message_ignored", reason="match past the leader's log", src=msg.src, match_index=msg.match_index)
            return
        if msg.diverged:
            if msg.src not in self.peer_divergences:
                self._log("peer_diverged", peer=msg.src, index=msg.rejected_index)
            self.peer_divergences[msg.src] = msg.rejected_index
            pr.diverged = True
            return
        if msg.success:
            if pr.on_success(msg.match_index):
                pr.match_round = self.reads.round
                self._maybe_commit()
            if msg.src == self.transferee and pr.match_index == self.log.last_index and not self._timeout_now_sent:
                self._send_timeout_now(msg.src)
            self._send_append(msg.src)
            return
        if pr.state == SNAPSHOT:
            return  # a heartbeat's answer while the snapshot is on its way
        if msg.rejected_index <= pr.match_index and msg.read_round > pr.match_round:
            # It refused an index it had acknowledged, answering a message sent after
            # the acknowledgement arrived: its log went backwards (a restored copy, a
            # disk that lied). It holds less than it promised; count on it no more.
            self._log("peer_log_regressed", peer=msg.src, acknowledged=pr.match_index, rejected_index=msg.rejected_index)
            self.peer_divergences[msg.src] = msg.rejected_index
            pr.diverged = True
            return
        if msg.rejected_index <= pr.match_index or (pr.state == PROBE and msg.rejected_index != pr.next_index - 1):
            return  # stale: an answer to something we sent before we learned more
        pr.on_reject(min(self._next_index_after_reject(msg), msg.rejected_index))
        self._send_append(msg.src)

    def _next_index_after_reject(self, msg: AppendEntriesResponse) -> int:
        """Skip a whole conflicting term per round trip (§5.3, the optimisation the
        paper sketches): resume after our last entry of the follower's conflicting
        term if we have that term, else at the first index the follower holds for it."""
        if msg.conflict_term is None:
            return msg.conflict_index
        ours = self.log.last_index_of_term(msg.conflict_term)
        if ours is not None:
            return ours + 1
        return msg.conflict_index

    def _maybe_commit(self) -> bool:
        matches = {p: pr.match_index for p, pr in self.progress.items()}
        matches[self.id] = self.log.stable_index
        index = self.membership.committed_index(matches)
        # §5.4.2: only an entry of the leader's own term is committed by counting
        # replicas; earlier ones are committed indirectly by it (Figure 8).
        if index > self.commit_index and self.log.term_at(index) == self.current_term:
            self.commit_index = index
            self._log("commit_advanced", commit_index=index)
            if self.reads.before_commit:
                waiting, self.reads.before_commit = self.reads.before_commit, []
                for request, lease in waiting:
                    self._start_read(request, lease)
            self._advance_membership_change()
            return True
        return False

    def _flush_broadcast(self) -> None:
        """Send everything proposed since the last Ready in one AppendEntries per
        follower: proposals that arrive together travel together."""
        if self._broadcast_pending and self.role == LEADER:
            if self._heartbeat_pending:
                self._heartbeat_all()  # a read round: every follower must answer
            else:
                for peer in self.progress:
                    self._send_append(peer)
        self._broadcast_pending = False

    def _send_append(self, peer: NodeId, heartbeat: bool = False) -> None:
        pr = self.progress.get(peer)
        if pr is None or pr.diverged:
            return  # removed by the commit this answer just caused, or no longer leading; or a broken history
        if pr.state == SNAPSHOT:
            if heartbeat:
                self._send_snapshot_heartbeat(peer)
            return
        if heartbeat:
            pr.probe_sent = False
        if pr.state == PROBE and pr.probe_sent:
            return
        if pr.next_index <= self.log.snapshot_index:
            self._send_snapshot(peer, pr)
            return
        last = self.log.last_index
        entries: tuple[Entry, ...] = ()
        if pr.state == PROBE or pr.inflight() < self.options.max_inflight_entries:
            hi = min(last + 1, pr.next_index + self.options.max_entries_per_message)
            # Capped in bytes too: a follower far behind on large values must get
            # messages its transport accepts, or it never catches up.
            entries = self.log.slice_bytes(pr.next_index, hi, self.options.max_bytes_per_message)
        if not entries and not heartbeat and pr.state == REPLICATE:
            return
        prev = pr.next_index - 1
        prev_term = self.log.term_at(prev)
        assert prev_term is not None, "Invariant: next_index <= last_index + 1"
        self._send(
            AppendEntries(
                src=self.id,
                dst=peer,
                term=self.current_term,
                prev_log_index=prev,
                prev_log_term=prev_term,
                entries=entries,
                leader_commit=self.commit_index,
                read_round=self.reads.round,
                prev_log_hash=self.log.hash_at(prev),
            )
        )
        self.reads.round_fresh = False
        if pr.state == REPLICATE and entries:
            pr.next_index = entries[-1].index + 1
        elif pr.state == PROBE:
            pr.probe_sent = True

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        """The follower needs entries we compacted: the host streams it our snapshot."""
        snap = SnapshotMeta(self.log.snapshot_index, self.log.snapshot_term, self.log.snapshot_membership, hash=self.log.snapshot_hash)
        pr.become_snapshot(snap.index)
        if worth_logging(pr.snapshot_attempts):
            self._log("snapshot_needed", peer=peer, index=snap.index, match_index=pr.match_index, attempts=pr.snapshot_attempts)
        self._send(InstallSnapshot(src=self.id, dst=peer, term=self.current_term, snapshot=snap))

    def _send_snapshot_heartbeat(self, peer: NodeId) -> None:
        """Keep the follower's election timer quiet while its snapshot streams. The
        append names our snapshot's last entry, which every log that installed a
        snapshot of ours holds; its success ends the SNAPSHOT state."""
        self._send(
            AppendEntries(
                src=self.id,
                dst=peer,
                term=self.current_term,
                prev_log_index=self.log.snapshot_index,
                prev_log_term=self.log.snapshot_term,
                entries=(),
                leader_commit=self.commit_index,
                read_round=self.reads.round,
                prev_log_hash=self.log.snapshot_hash,
            )
        )
        self.reads.round_fresh = False

    # --- helpers --------------------------------------------------------------------

    def _answer_stale(self, msg: Message) -> None:
        """A message from an older term. Requests get an answer carrying our term so a
        deposed leader or stale candidate steps down (§5.1); answers are dropped."""
        match msg:
            case RequestVote():
                self._send(RequestVoteResponse(src=self.id, dst=msg.src, term=self.current_term, vote_granted=False, pre_vote=msg.pre_vote))
            case AppendEntries():
                self._send(self._answer_append(msg.src, success=False, rejected_index=msg.prev_log_index))
            case InstallSnapshot():
                self._send(self._answer_append(msg.src, success=False, rejected_index=msg.snapshot.index))

    def _send(self, msg: Message) -> None:
        self._outbox.append(msg)

    def _hard_state_changed(self) -> bool:
        p = self._persisted_hard_state
        return p.current_term != self.current_term or p.voted_for != self.voted_for or p.commit_index != self.commit_index

    def _hard_state(self) -> HardState:
        return HardState(self.current_term, self.voted_for, self.commit_index)

    def _check_not_in_ready(self) -> None:
        if self._in_ready:
            raise RuntimeError("advance() the last Ready before stepping the node again")

    def _log(self, event: str, **fields: object) -> None:
        self._log_fn(event, node=self.id, term=self.current_term, role=self.role, **fields)

    def describe(self) -> str:
        return (
            f"node {self.id} {self.role} term={self.current_term} vote={self.voted_for} "
            f"leader={self.leader_id} last={self.log.last_term}/{self.log.last_index} "
            f"commit={self.commit_index} applied={self.applied}"
        )
