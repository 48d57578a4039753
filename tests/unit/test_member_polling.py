"""MemberChange, the host's driver of `member add | remove` (raftproc.server.members):
polled once per loop pass on the leader, it takes the core through learner, catch-up
and promotion, and answers the client exactly once. Scripted with the harness."""

from __future__ import annotations

from harness import Cluster

from raftproc.core import RaftOptions
from raftproc.server.members import MemberChange

CONFIG = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=True, check_quorum=True)


def running(spares: int = 1):
    c = Cluster(3, spares=spares, config=CONFIG)
    leader = c.elect(1)
    c.deliver()
    return c, leader


def poll_until_answered(c: Cluster, change: MemberChange, leader, answers: list, *, now: float = 0.0, passes: int = 50) -> int:
    for n in range(1, passes + 1):
        done = change.poll(leader, now, lambda node: b"")
        c.process(leader.id)
        c.deliver()
        if done:
            return n
    raise AssertionError(f"no answer after {passes} passes: {answers}")


def test_member_add_goes_through_learner_and_promotion_then_answers_ok_once():
    c, leader = running()
    c.start(4)
    answers: list[dict] = []
    change = MemberChange("add", 4, deadline=10.0, answer=lambda **f: answers.append(f))
    passes = poll_until_answered(c, change, leader, answers)
    assert passes >= 3, "learner, joint, final: one change per pass at most"
    assert [a["status"] for a in answers] == ["ok"]
    assert 4 in leader.membership.voters and not leader.membership.is_joint
    assert all(c.node(i).membership.voters == leader.membership.voters for i in (1, 2, 3, 4))


def test_member_add_of_a_silent_node_times_out_as_unknown_and_says_why():
    c, leader = running()  # node 4 never starts: the learner never answers
    answers: list[dict] = []
    change = MemberChange("add", 4, deadline=1.0, answer=lambda **f: answers.append(f))
    for _ in range(5):
        assert not change.poll(leader, 0.0, lambda node: b"")
        c.process(leader.id)
        c.deliver()
    assert change.poll(leader, 2.0, lambda node: b"")
    assert [a["status"] for a in answers] == ["unknown"]
    assert "has not answered" in answers[0]["error"]


def test_member_remove_answers_unknown_when_leadership_moves():
    c, leader = running()
    answers: list[dict] = []
    change = MemberChange("remove", 3, deadline=10.0, answer=lambda **f: answers.append(f))
    leader.become_follower(leader.current_term + 1, None)
    assert change.poll(leader, 0.0, lambda node: b"")
    assert [a["status"] for a in answers] == ["unknown"]


def test_member_remove_of_a_voter_answers_ok_when_committed():
    c, leader = running()
    answers: list[dict] = []
    change = MemberChange("remove", 3, deadline=10.0, answer=lambda **f: answers.append(f))
    poll_until_answered(c, change, leader, answers)
    assert [a["status"] for a in answers] == ["ok"]
    assert 3 not in leader.membership.members
