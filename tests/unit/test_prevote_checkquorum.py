"""PreVote and CheckQuorum (Raft thesis §9.6 and §6.2)."""

from __future__ import annotations

from harness import Cluster

from raftproc.core import CANDIDATE, FOLLOWER, LEADER, RaftOptions, RequestVote
from raftproc.core.types import PRE_CANDIDATE

PREVOTE = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=True, check_quorum=True)
CLASSIC = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=False, check_quorum=False)


def not_involving(node_id):
    return lambda m: m.src != node_id and m.dst != node_id


def isolate_and_tick(c: Cluster, lone: int, ticks: int) -> None:
    for _ in range(ticks):
        for i in c.ids:
            c.tick(i)
        c.deliver(not_involving(lone), drop_rest=True)


def test_prevote_a_cut_off_node_rejoins_without_raising_the_term():
    """Reference: thesis §9.6"""
    terms = {}
    for name, cfg in (("prevote", PREVOTE), ("classic", CLASSIC)):
        c = Cluster(3, config=cfg)
        c.elect(1)
        c.deliver()
        term = c.node(1).current_term
        isolate_and_tick(c, 3, 100)  # several election timeouts alone
        assert c.node(1).role == LEADER
        terms[name] = c.node(3).current_term - term
        # Heal: the leader's heartbeats reach node 3 again.
        for _ in range(10):
            for i in c.ids:
                c.tick(i)
            c.deliver()
        terms[name + "-leader"] = c.node(1).role
    assert terms["prevote"] == 0 and terms["prevote-leader"] == LEADER
    assert terms["classic"] > 0  # without PreVote the lone node ran up its term


def test_prevote_a_majority_yes_starts_the_real_election():
    """Reference: thesis §9.6"""
    c = Cluster(3, config=PREVOTE)
    c.elect(1)
    c.deliver()
    term = c.node(1).current_term
    c.crash(1)
    node2 = c.node(2)
    while node2.role == FOLLOWER:
        c.tick(2)
        c.tick(3)
    assert node2.role == PRE_CANDIDATE and node2.current_term == term  # asking, not yet raised
    for _ in range(200):
        c.deliver()
        if LEADER in (c.node(2).role, c.node(3).role):
            break
        c.tick(2)
        c.tick(3)
    leader = c.node(2) if c.node(2).role == LEADER else c.node(3)
    assert leader.role == LEADER
    assert leader.current_term <= term + 2  # a split vote may cost one more term


def test_checkquorum_leader_steps_down_when_it_cannot_hear_a_majority():
    """Reference: thesis §6.2"""
    c = Cluster(3, config=PREVOTE)
    leader = c.elect(1)
    c.deliver()
    for _ in range(PREVOTE.election_timeout_min * 2):
        c.tick(1)
        c.drop()  # nothing reaches anyone
    assert leader.role == FOLLOWER and leader.leader_id is None


def test_checkquorum_leader_with_a_majority_stays():
    c = Cluster(3, config=PREVOTE)
    leader = c.elect(1)
    for _ in range(PREVOTE.election_timeout_min * 3):
        c.tick(1)
        c.deliver(lambda m: 3 not in (m.src, m.dst), drop_rest=True)
    assert leader.role == LEADER


def test_follower_that_heard_its_leader_ignores_a_higher_term_vote_request():
    """Reference: thesis §4.2.3 (disruptive servers)"""
    c = Cluster(3, config=PREVOTE)
    c.elect(1)
    c.deliver()
    follower = c.node(2)
    term = follower.current_term
    c.queue.clear()
    follower.step(RequestVote(src=3, dst=2, term=term + 5, last_log_index=99, last_log_term=term))
    c.process(2)
    assert follower.current_term == term and follower.leader_id == 1
    assert c.queue == []  # not even an answer


def test_candidate_role_after_prevote_is_a_real_candidate():
    c = Cluster(3, config=PREVOTE)
    node = c.node(1)
    node.campaign()  # an explicit campaign skips the pre-vote (as a transfer would)
    assert node.role == CANDIDATE and node.current_term == 1
