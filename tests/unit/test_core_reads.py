"""ReadIndex and lease reads in the core (Raft thesis §6.4), scripted."""

from __future__ import annotations

import pytest
from harness import Cluster, between

from raftproc.core import FOLLOWER, LEADER, NotLeader, RaftOptions
from raftproc.core.messages import AppendEntries, AppendEntriesResponse

LEASE = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=False, check_quorum=True)


def read_states(c: Cluster, i: int) -> list:
    """The reads node i confirmed since last asked."""
    c.process(i)
    out, c.reads[i] = c.reads[i], []
    return out


def leader_with_commit(config: RaftOptions | None = None) -> tuple[Cluster, object]:
    c = Cluster(3, config=config) if config else Cluster(3)
    leader = c.elect(1)
    c.deliver()
    c.propose(1, b"x")
    c.deliver()
    assert leader.commit_index == 2
    return c, leader


def test_read_index_waits_for_a_majority_to_answer_a_round_started_after_it():
    c, leader = leader_with_commit()
    leader.read_index(7)
    assert read_states(c, 1) == []  # a heartbeat round went out; nothing confirmed yet
    beats = [m for m in c.queue if isinstance(m, AppendEntries)]
    assert {m.dst for m in beats} == {2, 3} and all(m.read_round == beats[0].read_round for m in beats)
    c.deliver(lambda m: m.dst == 2 or m.src == 2, drop_rest=True)  # one follower answers: a majority with us
    states = read_states(c, 1)
    assert [(s.request, s.index) for s in states] == [(7, 2)]


def test_an_answer_to_an_older_round_does_not_confirm_a_read():
    c, leader = leader_with_commit()
    leader.tick()
    leader.tick()
    leader.tick()  # a heartbeat round goes out before the read
    c.process(1)
    old = [m for m in c.queue if isinstance(m, AppendEntries)]
    c.queue = []
    leader.read_index(8)
    read_states(c, 1)
    c.queue = [m for m in c.queue if m.dst not in (2, 3)]  # the new round is lost
    for m in old:  # answers to the old round arrive
        c.node(m.dst).step(m)
        c.process(m.dst)
    c.deliver(lambda m: isinstance(m, AppendEntriesResponse))
    assert read_states(c, 1) == []


def test_reads_wait_until_the_leader_commits_in_its_term():
    c = Cluster(3)
    leader = c.elect(1)  # the no-op of its term is not committed yet
    leader.read_index(1)
    assert read_states(c, 1) == []
    c.deliver()
    states = read_states(c, 1) or []
    assert [s.request for s in states] == [1] and states[0].index == leader.commit_index >= 1


def test_a_deposed_leader_never_confirms_and_drops_its_reads():
    c, leader = leader_with_commit()
    leader.read_index(9)
    read_states(c, 1)
    c.queue = []  # cut off: its round reaches nobody
    c.elect(2, voters=(2, 3))
    c.deliver(between(2, 3))
    for _ in range(5):
        c.tick(2)
    c.deliver(between(1, 2))  # the new leader's heartbeat deposes node 1
    assert leader.role == FOLLOWER
    assert read_states(c, 1) == []
    with pytest.raises(NotLeader):
        leader.read_index(10)


def test_lease_reads_skip_the_round_only_while_the_lease_holds():
    c, leader = leader_with_commit(LEASE)
    leader.read_index(1, lease=True)
    assert [s.request for s in read_states(c, 1)] == [1]  # the round that committed "x" is the lease
    assert not [m for m in c.queue if isinstance(m, AppendEntries)]
    for _ in range(LEASE.election_timeout_min):  # no answers for a minimum election timeout
        leader.tick()
        c.process(1)
    c.queue = []
    leader.read_index(2, lease=True)
    assert read_states(c, 1) == []  # expired: a round is needed
    c.deliver()
    assert [s.request for s in read_states(c, 1)] == [2]


def test_a_restarted_voter_refuses_votes_for_a_minimum_timeout():
    """Its refusal before the crash may be part of a leader's read lease."""
    c, leader = leader_with_commit(LEASE)
    c.crash(2)
    c.start(2)
    c.node(3).campaign()
    c.process(3)
    c.deliver(between(2, 3))
    assert c.node(3).role != LEADER and c.node(2).voted_for != 3
    for _ in range(LEASE.election_timeout_min):
        c.node(2).tick()
    c.node(3).campaign()
    c.process(3)
    c.deliver(between(2, 3))
    assert c.node(3).role == LEADER
