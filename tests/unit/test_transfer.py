"""Leadership transfer (Raft thesis §3.10), scripted, with PreVote and CheckQuorum on."""

from __future__ import annotations

import pytest
from harness import Cluster, between

from raftproc.core import FOLLOWER, LEADER, RaftOptions
from raftproc.core.messages import TimeoutNow
from raftproc.core.types import TransferInProgress

PREVOTE = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=True, check_quorum=True)


def running(config: RaftOptions = PREVOTE) -> tuple[Cluster, object]:
    c = Cluster(3, config=config)
    leader = c.elect(1)
    c.deliver()
    c.propose(1, b"x")
    c.deliver()
    return c, leader


def test_transfer_under_prevote_and_lease_elects_the_target_at_once():
    c, leader = running()
    term = leader.current_term
    # Node 3 heard the leader just now: it would refuse an ordinary candidate.
    leader.transfer_leadership(2)
    c.process(1)
    c.deliver()
    assert c.node(2).role == LEADER and c.node(2).current_term == term + 1
    assert leader.role == FOLLOWER and c.node(3).leader_id == 2


def test_a_lagging_target_is_caught_up_before_timeout_now():
    c, leader = running()
    c.drop()
    for k in range(5):  # node 2 misses these
        c.propose(1, b"m%d" % k)
    c.deliver(between(1, 3))
    leader.transfer_leadership(2)
    c.process(1)
    assert not any(isinstance(m, TimeoutNow) for m in c.queue)  # appends first
    with pytest.raises(TransferInProgress):
        leader.propose(b"refused while handing over")
    c.deliver()
    assert c.node(2).role == LEADER
    assert c.node(2).log.last_index >= 7  # it took every entry the old leader had


def test_a_transfer_to_an_unreachable_target_is_abandoned():
    c, leader = running()
    c.crash(2)
    leader.transfer_leadership(2)
    for _ in range(PREVOTE.election_timeout_max + 1):
        c.tick(1)
        c.tick(3)
        c.deliver(between(1, 3), drop_rest=True)
    assert leader.role == LEADER and leader.transferee is None
    leader.propose(b"accepted again")


def test_transfer_rejects_itself_and_strangers():
    c, leader = running()
    with pytest.raises(ValueError):
        leader.transfer_leadership(1)
    with pytest.raises(ValueError):
        leader.transfer_leadership(9)


LEASE = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=False, check_quorum=True)


def test_a_leader_that_sent_timeout_now_no_longer_trusts_its_lease():
    """The target may win at once (voters answer a transfer inside a lease), so the
    old leader, deaf to the news, must not serve a lease read afterwards."""
    c, leader = running(LEASE)
    leader.read_index(1, lease=True)
    c.process(1)
    assert [r.request for r in c.reads[1]] == [1]  # the lease holds before the handover
    c.reads[1] = []
    leader.transfer_leadership(2)
    c.process(1)
    c.deliver(lambda m: isinstance(m, TimeoutNow), drop_rest=True, rounds=1)
    c.deliver(between(2, 3))  # node 2 wins with node 3 and commits; node 1 hears nothing
    assert c.node(2).role == LEADER and c.node(2).commit_index > leader.commit_index
    assert leader.role == LEADER  # deaf: it still thinks it leads
    leader.read_index(2, lease=True)
    c.process(1)
    assert c.reads[1] == []  # no lease read; the round it started can never be confirmed
