"""One test per rule of the Raft paper ("In Search of an Understandable Consensus
Algorithm", extended version), after etcd's raft_paper_test.go."""

from __future__ import annotations

import random

import pytest
from harness import SCRIPT_CONFIG, Cluster, between

from raftproc.core import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    NotLeader,
    RaftNode,
    RaftOptions,
    RequestVote,
    RequestVoteResponse,
)


def make_node(node_id: int = 1, n: int = 3, *, term: int = 0, entries=(), vote=None, seed: int = 0) -> RaftNode:
    return RaftNode(
        node_id,
        range(1, n + 1),
        rng=random.Random(seed),
        options=SCRIPT_CONFIG,
        hard_state=HardState(term, vote, 0),
        entries=entries,
    )


def drain(node: RaftNode):
    """Take one Ready, pretend it was persisted and applied, return it."""
    rd = node.ready()
    node.advance(rd)
    return rd


def log_of(*terms: int) -> list[Entry]:
    return [Entry(t, i, f"e{i}".encode()) for i, t in enumerate(terms, start=1)]


# --- §5.1 terms ------------------------------------------------------------------


@pytest.mark.parametrize("role", [FOLLOWER, CANDIDATE, LEADER])
def test_any_role_adopts_higher_term_and_follows(role):
    """A server that sees a higher term updates its term and becomes a follower.
    Reference: §5.1"""
    c = Cluster(3)
    node = c.node(1)
    if role == CANDIDATE:
        node.campaign()
    elif role == LEADER:
        c.elect(1)
    node.step(AppendEntries(src=2, dst=1, term=9, prev_log_index=0, prev_log_term=0, leader_commit=0))
    assert (node.role, node.current_term, node.leader_id) == (FOLLOWER, 9, 2)


def test_stale_term_request_is_rejected_with_current_term():
    """A server rejects a request with a stale term and answers with its own term.
    Reference: §5.1"""
    node = make_node(1, term=5)
    node.step(RequestVote(src=2, dst=1, term=4, last_log_index=9, last_log_term=4))
    node.step(AppendEntries(src=3, dst=1, term=3, prev_log_index=0, prev_log_term=0, leader_commit=0))
    msgs = drain(node).messages
    assert msgs[0] == RequestVoteResponse(src=1, dst=2, term=5, vote_granted=False)
    assert isinstance(msgs[1], AppendEntriesResponse) and not msgs[1].success and msgs[1].term == 5
    assert node.current_term == 5 and node.voted_for is None


def test_leader_steps_down_when_an_answer_carries_a_higher_term():
    """A deposed leader learns of the newer term from any reply and steps down.
    Reference: §5.1"""
    c = Cluster(3)
    leader = c.elect(1)
    leader.step(AppendEntriesResponse(src=2, dst=1, term=leader.current_term + 1, success=False))
    assert leader.role == FOLLOWER and leader.leader_id is None


# --- §5.2 leader election -------------------------------------------------------------


def test_follower_starts_election_on_timeout():
    """A follower that hears nothing for an election timeout becomes a candidate,
    increments its term, votes for itself and asks every peer for a vote.
    Reference: §5.2"""
    node = make_node(1, n=3, term=2)
    for _ in range(SCRIPT_CONFIG.election_timeout_max):
        node.tick()
    assert (node.role, node.current_term, node.voted_for) == (CANDIDATE, 3, 1)
    rd = drain(node)
    assert rd.hard_state == HardState(3, 1, 0)
    assert sorted(m.dst for m in rd.messages if isinstance(m, RequestVote)) == [2, 3]


def test_election_timeouts_are_randomized_within_bounds():
    """Election timeouts are chosen at random from a fixed interval, so split votes
    are rare. Reference: §5.2"""
    seen = set()
    for seed in range(50):
        node = make_node(seed=seed)
        ticks = 0
        while node.role == FOLLOWER:
            node.tick()
            ticks += 1
        assert SCRIPT_CONFIG.election_timeout_min <= ticks < SCRIPT_CONFIG.election_timeout_max
        seen.add(ticks)
    assert len(seen) > 3


def test_candidate_wins_with_a_majority_of_votes():
    """A candidate that receives votes from a majority becomes leader.
    Reference: §5.2"""
    node = make_node(1, n=5)
    node.campaign()
    drain(node)
    node.step(RequestVoteResponse(src=2, dst=1, term=1, vote_granted=True))
    assert node.role == CANDIDATE
    node.step(RequestVoteResponse(src=3, dst=1, term=1, vote_granted=False))
    assert node.role == CANDIDATE
    node.step(RequestVoteResponse(src=4, dst=1, term=1, vote_granted=True))
    assert node.role == LEADER and node.leader_id == 1


def test_duplicate_votes_count_once():
    """A vote counts once however often it arrives. Reference: §5.2"""
    node = make_node(1, n=5)
    node.campaign()
    for _ in range(3):
        node.step(RequestVoteResponse(src=2, dst=1, term=1, vote_granted=True))
    assert node.role == CANDIDATE


def test_candidate_without_majority_starts_a_new_election_after_timeout():
    """A split vote ends in a timeout and a new election in a higher term.
    Reference: §5.2"""
    node = make_node(1, n=3)
    node.campaign()
    for _ in range(SCRIPT_CONFIG.election_timeout_max):
        node.tick()
    assert node.role == CANDIDATE and node.current_term == 2


def test_one_vote_per_term_first_come_first_served():
    """Each server votes for at most one candidate in a term.
    Reference: §5.2"""
    node = make_node(1, n=3)
    node.step(RequestVote(src=2, dst=1, term=1, last_log_index=0, last_log_term=0))
    node.step(RequestVote(src=3, dst=1, term=1, last_log_index=0, last_log_term=0))
    node.step(RequestVote(src=2, dst=1, term=1, last_log_index=0, last_log_term=0))
    granted = [m.vote_granted for m in drain(node).messages]
    assert granted == [True, False, True]
    assert node.voted_for == 2


def test_candidate_steps_down_for_a_leader_of_its_term():
    """A candidate that hears AppendEntries from a leader of its own term returns to
    follower. Reference: §5.2"""
    node = make_node(1, n=3)
    node.campaign()
    node.step(AppendEntries(src=2, dst=1, term=1, prev_log_index=0, prev_log_term=0, leader_commit=0))
    assert (node.role, node.leader_id, node.current_term) == (FOLLOWER, 2, 1)


def test_leader_sends_heartbeats_every_interval():
    """A leader sends empty AppendEntries at the heartbeat interval to keep its
    authority. Reference: §5.2"""
    c = Cluster(3)
    c.elect(1)
    c.deliver()
    c.queue.clear()
    c.tick(1, SCRIPT_CONFIG.heartbeat_interval - 1)
    assert c.queue == []
    c.tick(1)
    beats = [m for m in c.queue if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in beats) == [2, 3] and all(m.entries == () for m in beats)


def test_granting_a_vote_is_persisted_before_the_answer_is_sent():
    """The vote is in the Ready's hard state, which the host persists before sending
    that Ready's messages. Reference: §5.2, Figure 2 (persistent state)"""
    node = make_node(1, n=3)
    node.step(RequestVote(src=2, dst=1, term=4, last_log_index=0, last_log_term=0))
    rd = node.ready()
    assert rd.hard_state == HardState(4, 2, 0)
    assert rd.messages == (RequestVoteResponse(src=1, dst=2, term=4, vote_granted=True),)


def test_follower_knows_its_leader_for_redirects():
    """Clients that reach a follower are redirected: the follower knows who leads.
    Reference: §8"""
    c = Cluster(3)
    c.elect(2)
    c.deliver()
    assert c.node(1).leader_id == 2 and c.node(3).leader_id == 2
    with pytest.raises(NotLeader) as err:
        c.node(1).propose(b"x")
    assert err.value.leader_id == 2


# --- §5.4.1 election restriction -------------------------------------------------------


@pytest.mark.parametrize(
    "voter_log, cand_last_term, cand_last_index, granted",
    [
        ((1, 1, 2), 2, 3, True),  # same last term, same length
        ((1, 1, 2), 2, 4, True),  # same last term, longer
        ((1, 1, 2), 2, 2, False),  # same last term, shorter
        ((1, 1, 2), 3, 1, True),  # higher last term wins even when shorter
        ((1, 1, 2), 1, 9, False),  # lower last term loses even when longer
    ],
)
def test_vote_only_for_an_up_to_date_log(voter_log, cand_last_term, cand_last_index, granted):
    """A voter denies its vote if its own log is more up-to-date than the
    candidate's: last terms decide first, then lengths. Reference: §5.4.1"""
    node = make_node(1, n=3, term=3, entries=log_of(*voter_log))
    node.step(RequestVote(src=2, dst=1, term=4, last_log_index=cand_last_index, last_log_term=cand_last_term))
    (answer,) = drain(node).messages
    assert answer.vote_granted is granted


# --- §5.3 log replication --------------------------------------------------------------


def test_new_leader_appends_a_noop_of_its_term():
    """A new leader commits a blank no-op entry at the start of its term.
    Reference: §8"""
    c = Cluster(3)
    leader = c.elect(1)
    assert leader.log.entry(1) == Entry(leader.current_term, 1, None)
    c.deliver()
    assert leader.commit_index == 1


def test_follower_rejects_append_when_prev_entry_does_not_match():
    """The consistency check: a follower refuses entries whose predecessor it does
    not hold, and hints where the leader should resume. Reference: §5.3"""
    node = make_node(1, n=3, term=3, entries=log_of(1, 2, 2, 2))
    node.step(AppendEntries(src=2, dst=1, term=3, prev_log_index=4, prev_log_term=3, entries=(Entry(3, 5),), leader_commit=0))
    node.step(AppendEntries(src=2, dst=1, term=3, prev_log_index=7, prev_log_term=3, leader_commit=0))
    mismatch, too_short = drain(node).messages
    assert (mismatch.success, mismatch.rejected_index, mismatch.conflict_term, mismatch.conflict_index) == (False, 4, 2, 2)
    assert (too_short.success, too_short.conflict_term, too_short.conflict_index) == (False, None, 5)
    assert node.log.last_index == 4


def test_follower_truncates_on_conflict_and_appends():
    """An existing entry that conflicts with a new one (same index, other term) is
    deleted with all that follow it. Reference: §5.3"""
    node = make_node(1, n=3, term=3, entries=log_of(1, 2, 2, 2))
    node.step(AppendEntries(src=2, dst=1, term=3, prev_log_index=2, prev_log_term=2, entries=(Entry(3, 3, b"new"),), leader_commit=0))
    rd = drain(node)
    assert [e.term for e in (node.log.entry(i) for i in range(1, 4))] == [1, 2, 3]
    assert node.log.last_index == 3
    assert rd.entries == (Entry(3, 3, b"new"),)  # storage replaces from index 3 on
    assert rd.messages[0].success and rd.messages[0].match_index == 3


def test_duplicated_or_reordered_append_never_truncates():
    """A follower that holds every entry of an AppendEntries keeps what follows them:
    a late copy of an old message must not erase acknowledged entries. Reference: §5.3"""
    node = make_node(1, n=3, term=1)
    first = AppendEntries(src=2, dst=1, term=1, prev_log_index=0, prev_log_term=0, entries=(Entry(1, 1, b"a"),), leader_commit=0)
    second = AppendEntries(
        src=2, dst=1, term=1, prev_log_index=0, prev_log_term=0, entries=(Entry(1, 1, b"a"), Entry(1, 2, b"b")), leader_commit=0
    )
    node.step(second)
    node.step(first)
    node.step(first)
    acks = drain(node).messages
    assert node.log.last_index == 2
    assert [m.match_index for m in acks] == [2, 1, 1]


def test_follower_commit_is_min_of_leader_commit_and_last_new_entry():
    """commitIndex = min(leaderCommit, index of last new entry): entries past what
    this message carried may belong to another leader. Reference: §5.3, Figure 2"""
    node = make_node(1, n=3, term=2, entries=log_of(1, 1, 1, 1))
    node.step(AppendEntries(src=2, dst=1, term=2, prev_log_index=1, prev_log_term=1, entries=(Entry(1, 2, b"e2"),), leader_commit=4))
    assert node.commit_index == 2
    node.step(AppendEntries(src=2, dst=1, term=2, prev_log_index=3, prev_log_term=1, leader_commit=3))
    assert node.commit_index == 3


def test_leader_skips_a_whole_conflicting_term_per_round_trip():
    """With the conflict hint the leader backs up one term per round trip, not one
    entry. Reference: §5.3 (the optimisation sketched at its end)"""
    c = Cluster(
        3,
        config=RaftOptions(
            election_timeout_min=10,
            election_timeout_max=20,
            heartbeat_interval=3,
            max_entries_per_message=4,
            pre_vote=False,
            check_quorum=False,
        ),
    )
    # Node 3 holds 30 entries of an old term 1; the leader's log diverges at index 1.
    c.storage[3].entries = log_of(*[1] * 30)
    c.storage[3].hard_state = HardState(1, None, 0)
    c.storage[1].entries = log_of(*[2] * 5)
    c.storage[1].hard_state = HardState(2, None, 0)
    c.storage[2].entries = log_of(*[2] * 5)
    c.storage[2].hard_state = HardState(2, None, 0)
    for i in c.ids:
        c.start(i)
    c.elect(1, voters=(1, 2))
    c.queue.clear()
    rejections = 0
    for _ in range(20):
        c.tick(1, SCRIPT_CONFIG.heartbeat_interval)
        before = len(c.queue)
        c.deliver(between(1, 3))
        rejections += sum(1 for m in c.queue[before:] if isinstance(m, AppendEntriesResponse) and not m.success)
        if c.node(3).log.last_index == c.node(1).log.last_index:
            break
    node3 = c.node(3)
    assert [node3.log.entry(i).term for i in range(1, 7)] == [2, 2, 2, 2, 2, 3]
    assert len(c.storage[3].entries) == 6  # the 30 stale entries are gone
    assert rejections <= 2


# --- §5.4.2 commitment ---------------------------------------------------------------


def test_leader_commits_own_term_entry_on_majority():
    """An entry of the leader's term is committed once a majority stores it.
    Reference: §5.3, §5.4.2"""
    c = Cluster(5)
    leader = c.elect(1)
    c.deliver()
    index, term = c.propose(1, b"x")
    c.deliver(between(1, 2), drop_rest=True)
    assert leader.commit_index < index  # leader + 1 of 5
    c.propose(1, b"y")
    c.deliver(between(1, 2, 3))
    assert leader.commit_index >= index
    assert b"x" in c.applied[1]


def test_leader_never_commits_previous_term_entry_by_counting_replicas():
    """Only entries of the current term are committed by counting replicas; older
    ones are committed indirectly. Reference: §5.4.2, Figure 8"""
    node = make_node(1, n=3, term=1, entries=log_of(1, 1))
    node.campaign()
    node.step(RequestVoteResponse(src=2, dst=1, term=2, vote_granted=True))
    assert node.role == LEADER
    drain(node)  # no-op 2/3 now persisted on the leader
    node.step(AppendEntriesResponse(src=2, dst=1, term=2, success=True, match_index=2))
    drain(node)
    assert node.commit_index == 0  # index 2 is term 1 on a majority, but not committed
    node.step(AppendEntriesResponse(src=2, dst=1, term=2, success=True, match_index=3))
    drain(node)
    assert node.commit_index == 3


def test_node_rebuilt_from_persisted_state_keeps_term_vote_and_log():
    """Current term, vote and log are persistent state: a node rebuilt from them
    refuses a second vote in the same term. Reference: Figure 2"""
    c = Cluster(3)
    c.node(1).step(RequestVote(src=2, dst=1, term=3, last_log_index=0, last_log_term=0))
    c.process(1)
    c.crash(1)
    node = c.start(1)
    assert (node.current_term, node.voted_for) == (3, 2)
    node.step(RequestVote(src=3, dst=1, term=3, last_log_index=5, last_log_term=2))
    assert drain(node).messages[0].vote_granted is False
