"""The simulator must not be vacuous: each planted bug is caught within the seeds
run here. Bugs live only in these test subclasses, never behind a flag in raftproc."""

from __future__ import annotations

import random

import pytest
from harness import Cluster, between

from raftproc.core import Entry, RaftNode
from raftproc.core.messages import AppendEntries
from raftproc.core.ready import ReadState
from raftproc.server.driver import Driver
from raftproc.sim import LivenessViolation, SafetyViolation, SimConfig, Simulation

SEEDS_TO_TRY = 300
DRIVER_SEEDS = 1000  # the bar for the driver bugs: caught within a 1,000-seed sweep
STEPS = 2000


class CommitsPreviousTermByCounting(RaftNode):
    """Bug 1: Figure 8. Counts replicas for an entry of an earlier term."""

    def _maybe_commit(self) -> bool:
        matches = {p: pr.match_index for p, pr in self.progress.items()}
        matches[self.id] = self.log.stable_index
        index = self.membership.committed_index(matches)
        if index > self.commit_index:
            self.commit_index = index
            return True
        return False


class VotesWithoutUpToDateCheck(RaftNode):
    """Bug 2: grants a vote to a candidate whose log is behind (§5.4.1 skipped)."""

    def _vote_refusal(self, msg):
        return None if self._may_vote_for(msg.src) else "already voted"


class VotesTwicePerTerm(RaftNode):
    """Bug 3: forgets that it already voted in this term."""

    def _may_vote_for(self, candidate):
        return self.voted_for != self.id or candidate == self.id


class TruncatesOnPresentEntries(RaftNode):
    """Bug 5: replaces everything after prev_log_index, even entries it already holds."""

    def _append_from_leader(self, msg: AppendEntries) -> int:
        if msg.entries and self.log.last_index > msg.prev_log_index:
            self.log.truncate_from(msg.prev_log_index + 1)
        if msg.entries:
            self.log.append(msg.entries[self.log.last_index - msg.prev_log_index :])
        return msg.prev_log_index + len(msg.entries)


class CommitsLeaderCommitUnclamped(RaftNode):
    """Bug 6: takes leader_commit as far as its own log reaches, without the min()
    with the last entry this leader sent, so it may commit another leader's entries."""

    def _follower_commit(self, leader_commit: int, last_new: int) -> None:
        commit = min(leader_commit, self.log.last_index)
        if commit > self.commit_index:
            self.commit_index = commit


class LeaderCountsUnpersistedEntries(RaftNode):
    """A seventh, for hosts that sync in the background: the leader counts its own
    entries toward a commit before its storage holds them."""

    def _maybe_commit(self) -> bool:
        matches = {p: pr.match_index for p, pr in self.progress.items()}
        matches[self.id] = self.log.last_index
        index = self.membership.committed_index(matches)
        if index > self.commit_index and self.log.term_at(index) == self.current_term:
            self.commit_index = index
            return True
        return False


class DiscardsLogOnEverySnapshot(RaftNode):
    """An eighth, for snapshots: the follower drops its whole log on every
    InstallSnapshot past its commit index, skipping Figure 13 step 6 (keep the
    entries after the snapshot when the log already holds its last entry)."""

    def _handle_install_snapshot(self, msg) -> None:
        if self.role != "follower" or self.leader_id != msg.src:
            self.become_follower(self.current_term, msg.src)
        self._reset_election_timer()
        if msg.snapshot.index > self.commit_index:
            self._restore(msg.snapshot)
        self._send(self._answer_append(msg.src, success=True, match_index=self.commit_index))


class ReadsWithoutHeartbeatRound(RaftNode):
    """A ninth, for ReadIndex: answers a read at its commit index without a round of
    heartbeats to confirm it still leads (a deposed leader serves stale reads)."""

    def _start_read(self, request: int, lease: bool) -> None:
        self.reads.states.append(ReadState(request, self.commit_index))


class LeaseNeverExpires(RaftNode):
    """A tenth, for lease reads: keeps serving reads from its lease after it lost
    its majority."""

    def _lease_valid(self) -> bool:
        return True


class TwoConfigChangesInFlight(RaftNode):
    """An eleventh, for membership changes: accepts a new configuration while the
    last one is uncommitted or joint, so a change can start from a configuration
    that never took hold and skip the majority of the one before it."""

    def _membership_change_pending(self) -> bool:
        return False


class SendsBeforePersisting(Driver):
    """Bug 4, in the Ready driver the node runs: with inline sync, sends a Ready's
    votes and acknowledgements before its hard state and entries reach storage."""

    def _persist_inline(self, rd, after):
        self.transport.send(after)
        super()._persist_inline(rd, [])


class AcknowledgesBeforeSynced(Driver):
    """A twelfth, in the Ready driver: with background sync, lets a Ready's votes
    and acknowledgements leave as soon as its record is written, not once the sync
    thread reports it durable."""

    def _persist_background(self, rd, after):
        self.transport.send(after)
        super()._persist_background(rd, [])


class SendsWhenTheDiskIsFull(Driver):
    """In the Ready driver: when a write finds the disk full (the simulation fills
    disks now and then), lets the Ready's votes and acknowledgements leave anyway,
    as if the write had only been slow."""

    def _persist_inline(self, rd, after):
        try:
            super()._persist_inline(rd, after)
        except OSError:
            self.transport.send(after)
            raise

    def _persist_background(self, rd, after):
        try:
            super()._persist_background(rd, after)
        except OSError:
            self.transport.send(after)
            raise


def first_caught(make_sim, seeds: int = SEEDS_TO_TRY) -> tuple[int, str] | None:
    for i in range(seeds):
        nodes = (3, 5, 7)[i % 3]
        try:
            make_sim(i, SimConfig(nodes=nodes, steps=STEPS)).run()
        except (SafetyViolation, LivenessViolation) as e:
            return i, str(e)
    return None


@pytest.mark.parametrize(
    "node_cls",
    [
        CommitsPreviousTermByCounting,
        VotesWithoutUpToDateCheck,
        VotesTwicePerTerm,
        TruncatesOnPresentEntries,
        LeaderCountsUnpersistedEntries,
        DiscardsLogOnEverySnapshot,
        ReadsWithoutHeartbeatRound,
        LeaseNeverExpires,
        TwoConfigChangesInFlight,
    ],
)
def test_sim_catches_planted_core_bug(node_cls):
    caught = first_caught(lambda seed, cfg: Simulation(seed, cfg, node_factory=node_cls))
    assert caught is not None, f"{node_cls.__name__}: no violation in {SEEDS_TO_TRY} seeds"
    print(f"{node_cls.__name__} caught at seed {caught[0]}: {caught[1]}")


def test_follower_commits_no_further_than_the_last_entry_the_leader_sent():
    """Bug 6, scripted (Figure 2, AppendEntries rule 5). A follower holding a stale
    tail (4..6 of term 1, which a new leader overwrote and committed in term 2) gets
    an append that matches at 3 and carries leader_commit 8: it may commit up to 3
    only. The simulator no longer meets this state: our leader sends an empty append
    only at its last index, and re-probes from where its probe stood (it used to
    re-send from index 1 after a lost connection, which exposed this bug often)."""
    stale = [Entry(1, i) for i in range(1, 7)]
    for node_cls, commit in ((RaftNode, 3), (CommitsLeaderCommitUnclamped, 6)):
        follower = node_cls(2, (1, 2, 3, 4, 5), rng=random.Random(1), entries=stale)
        follower.step(AppendEntries(src=5, dst=2, term=2, prev_log_index=3, prev_log_term=1, entries=(), leader_commit=8))
        assert follower.commit_index == commit, node_cls.__name__


@pytest.mark.parametrize("driver_cls", [SendsBeforePersisting, AcknowledgesBeforeSynced, SendsWhenTheDiskIsFull])
def test_sim_catches_planted_driver_bug(driver_cls):
    """The bug sits in the Ready driver the node itself runs, so the sweep proves
    the node's code, not a copy of it."""
    caught = first_caught(lambda seed, cfg: Simulation(seed, cfg, driver_factory=driver_cls), seeds=DRIVER_SEEDS)
    assert caught is not None, f"{driver_cls.__name__}: no violation in {DRIVER_SEEDS} seeds"
    assert "persisted" in caught[1] or "Durability" in caught[1] or "Election Safety" in caught[1]
    print(f"{driver_cls.__name__} caught at seed {caught[0]}: {caught[1]}")


def test_correct_node_passes_the_seeds_that_catch_bugs():
    """The same seeds with the real node: what the bug tests catch is the bug."""
    for seed in range(30):
        Simulation(seed, SimConfig(nodes=(3, 5, 7)[seed % 3], steps=STEPS)).run()


def test_figure_8_previous_term_entry_is_not_committed_by_counting():
    """The paper's Figure 8, scripted. Reference: §5.4.2"""
    from raftproc.core import RaftOptions

    cfg = RaftOptions(
        election_timeout_min=10,
        election_timeout_max=20,
        heartbeat_interval=3,
        max_entries_per_message=1,
        pre_vote=False,
        check_quorum=False,
    )
    for node_cls, should_lose_commit in ((RaftNode, False), (CommitsPreviousTermByCounting, True)):
        c = Cluster(5, node_cls=node_cls, config=cfg)
        # (a) S1 leads term 1; the no-op commits everywhere; x reaches only S2.
        c.elect(1)
        c.deliver()
        x_index, _ = c.propose(1, b"x")
        c.deliver(between(1, 2), drop_rest=True)
        # (b) S1 crashes; S5 wins term 2 with S3, S4 and appends entries nobody sees.
        c.crash(1)
        c.elect(5, voters=(3, 4, 5))
        c.propose(5, b"y")
        c.drop()
        c.crash(5)
        # (c) S1 restarts and wins term 3 (S2, S3, S4); x reaches S3 alone, the
        # no-op of term 3 reaches S2 alone.
        c.start(1)
        leader = c.elect(1, voters=(1, 2, 3, 4))
        c.drop()
        c.tick(1, cfg.heartbeat_interval)
        for _ in range(6):
            c.deliver(lambda m: (m.src, m.dst) in {(1, 3), (3, 1)}, rounds=1)
            c.deliver(lambda m: (m.src, m.dst) in {(1, 2), (2, 1)}, rounds=1)
            c.drop(lambda m: m.dst in (4,) or m.src in (4,))
            if c.node(3).log.last_index >= x_index and leader.progress[3].match_index >= x_index:
                break
        c.drop(lambda m: m.dst == 3 or m.src == 3)
        assert c.node(3).log.entry(x_index).command == b"x"
        assert c.node(3).log.last_index == x_index
        assert (leader.commit_index >= x_index) is should_lose_commit
        if should_lose_commit:
            assert b"x" in c.applied[1]
        # (d) S1 crashes; S5 wins term 4 with S3, S4 and overwrites index 2 there.
        c.crash(1)
        c.start(5)
        c.elect(5, voters=(3, 4, 5))
        c.deliver(between(3, 4, 5))
        s5 = c.node(5)
        assert s5.log.entry(x_index).command != b"x"
        assert s5.commit_index >= x_index
        # With the bug, x was applied at x_index on S1 and now something else is.
        lost = c.applied[1][x_index - 1 : x_index] == [b"x"] and c.applied[5][x_index - 1] != b"x"
        assert lost is should_lose_commit
