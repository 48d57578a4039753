"""Membership changes (Raft paper §6): learners, joint consensus, one change at a
time, a removed leader, configurations in logs and snapshots. Scripted."""

from __future__ import annotations

import pytest
from harness import Cluster, between

from raftproc.core import FOLLOWER, LEADER, Membership, MembershipChangeRefused, RaftOptions
from raftproc.core.log import RaftLog
from raftproc.core.messages import Entry, InstallSnapshot, SnapshotMeta, TimeoutNow

CONFIG = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=True, check_quorum=True)


def running(n: int = 3, spares: int = 1, config: RaftOptions = CONFIG) -> tuple[Cluster, object]:
    c = Cluster(n, spares=spares, config=config)
    leader = c.elect(1)
    c.deliver()
    return c, leader


def change(c: Cluster, leader, voters, learners=()) -> tuple[int, int]:
    result = leader.propose_membership(voters, learners)
    c.process(leader.id)
    return result


def with_learner(c: Cluster, leader, node: int = 4) -> None:
    c.start(node)
    change(c, leader, leader.membership.voters, (node,))
    c.deliver()


# --- quorum arithmetic ------------------------------------------------------------


def test_a_joint_configuration_needs_a_majority_of_each_half():
    joint = Membership((1, 2, 4), outgoing=(1, 2, 3))
    assert joint.has_quorum({1, 2})
    assert not joint.has_quorum({1, 3})  # old majority only
    assert not joint.has_quorum({1, 4})  # new majority only
    assert joint.committed_index({1: 9, 2: 5, 3: 9, 4: 9}) == 9  # 1,3 old; 1,4 new
    assert joint.committed_index({1: 9, 2: 5, 3: 5, 4: 9}) == 5  # the old half holds 9 only on node 1
    assert not Membership(()).has_quorum({1})  # no voters: nobody decides anything
    with pytest.raises(ValueError):
        Membership((1, 2), learners=(2,))


def test_a_truncated_configuration_entry_gives_the_previous_one_back():
    log = RaftLog([Entry(1, 1), Entry(1, 2)], membership=Membership((1, 2, 3)))
    log.append([Entry(2, 3, None, Membership((1, 2, 3), learners=(4,)))])
    assert log.membership.learners == (4,) and log.config_index == 3
    log.truncate_from(3)  # another leader's entry wins index 3 (§6: use the latest in the log)
    assert log.membership == Membership((1, 2, 3)) and log.config_index == 0
    log.append([Entry(3, 3, None, Membership((1, 2), outgoing=(1, 2, 3))), Entry(3, 4)])
    log.compact(4)
    assert log.snapshot_membership == Membership((1, 2), outgoing=(1, 2, 3))


# --- learners -----------------------------------------------------------------------


def test_a_learner_gets_the_log_but_neither_votes_nor_counts():
    c, leader = running()
    with_learner(c, leader)
    learner = c.node(4)
    assert learner.membership.learners == (4,) and learner.log.last_index == leader.log.last_index
    # Two voters down: the learner's acknowledgement does not make a majority.
    c.crash(2)
    c.crash(3)
    index, _ = c.propose(1, b"needs a voter")
    c.deliver()
    assert leader.progress[4].match_index == index and leader.commit_index < index
    # A learner never campaigns, however long it hears nothing.
    c.crash(1)
    term = learner.current_term
    c.tick(4, CONFIG.election_timeout_max * 5)
    assert learner.role == FOLLOWER and learner.current_term == term and not c.queue


def test_a_new_node_must_join_as_a_learner_before_it_votes():
    c, leader = running()
    c.start(4)
    with pytest.raises(MembershipChangeRefused, match="must join as learners"):
        leader.propose_membership((1, 2, 3, 4))


def test_a_learner_far_behind_is_not_promoted():
    c, leader = running()
    c.start(4)
    change(c, leader, (1, 2, 3), (4,))
    c.deliver(lambda m: 4 not in (m.src, m.dst), drop_rest=True)  # the learner hears nothing
    with pytest.raises(MembershipChangeRefused, match="learner 4 has not answered this leader yet"):
        leader.propose_membership((1, 2, 3, 4))
    c.tick(1, CONFIG.heartbeat_interval)
    c.deliver()  # it answers, then falls behind again
    for k in range(CONFIG.promote_lag_entries + 1):
        leader.propose(b"w%d" % k)
    c.process(1)
    c.deliver(lambda m: 4 not in (m.src, m.dst), drop_rest=True)
    with pytest.raises(MembershipChangeRefused, match="learner 4 is .* behind"):
        leader.propose_membership((1, 2, 3, 4))
    c.tick(1, CONFIG.heartbeat_interval)
    c.deliver()  # it catches up
    change(c, leader, (1, 2, 3, 4))
    c.deliver()
    assert all(c.node(i).membership == Membership((1, 2, 3, 4)) for i in (1, 2, 3, 4))


# --- joint consensus -------------------------------------------------------------------


def test_promotion_goes_through_a_joint_configuration_that_the_leader_leaves():
    c, leader = running()
    with_learner(c, leader)
    joint_index, _ = change(c, leader, (1, 2, 3, 4))
    assert leader.membership == Membership((1, 2, 3, 4), outgoing=(1, 2, 3))
    c.deliver()
    final = leader.log.entry(joint_index + 1)
    assert final.membership == Membership((1, 2, 3, 4))  # appended by the leader itself once the joint one committed
    assert leader.commit_index >= final.index
    for i in (1, 2, 3, 4):
        assert c.node(i).membership == Membership((1, 2, 3, 4))


def test_during_a_joint_change_the_old_majority_alone_commits_nothing():
    c, leader = running()
    with_learner(c, leader)
    index, _ = change(c, leader, (1, 2, 4))  # replace voter 3 by node 4
    c.deliver(between(1, 3), drop_rest=True)  # 1 and 3: a majority of {1,2,3}, not of {1,2,4}
    assert leader.commit_index < index
    c.tick(1, CONFIG.heartbeat_interval)
    c.deliver(between(1, 4))  # 1 and 4 hold it now: a majority of both halves
    assert leader.commit_index >= index


def test_one_change_at_a_time():
    c, leader = running(spares=2)
    with_learner(c, leader)
    c.start(5)
    change(c, leader, (1, 2, 3, 4))
    with pytest.raises(MembershipChangeRefused, match="still in progress"):
        leader.propose_membership((1, 2, 3, 4), (5,))
    c.deliver(between(1, 2, 3, 4))  # joint committed, final appended
    c.deliver()
    change(c, leader, (1, 2, 3, 4), (5,))  # accepted once both committed


def test_a_new_leader_commits_in_its_term_before_it_changes_membership():
    c = Cluster(3, spares=1)  # no CheckQuorum: node 2 may be elected over a live leader
    c.elect(1)
    c.deliver()
    c.start(4)
    leader = c.elect(2)  # its no-op is not committed yet
    with pytest.raises(MembershipChangeRefused, match="has not committed an entry of its term"):
        leader.propose_membership((1, 2, 3), (4,))
    c.deliver()
    change(c, leader, (1, 2, 3), (4,))


# --- removal -----------------------------------------------------------------------------


def test_a_removed_leader_hands_over_and_never_campaigns_again():
    c, leader = running()
    term = leader.current_term
    change(c, leader, (2, 3))
    c.deliver(lambda m: not isinstance(m, TimeoutNow))
    assert leader.role == FOLLOWER  # stepped down once the final configuration committed
    handed = [m for m in c.queue if isinstance(m, TimeoutNow)]
    assert len(handed) == 1 and handed[0].src == 1
    c.deliver()
    new = c.node(handed[0].dst)
    assert new.role == LEADER and new.current_term == term + 1  # no election timeout waited
    c.drop()
    c.tick(1, CONFIG.election_timeout_max * 5)
    assert c.node(1).role == FOLLOWER and not any(m.src == 1 for m in c.queue)
    index, _ = c.propose(new.id, b"two voters now")
    c.deliver(between(2, 3))
    assert new.commit_index >= index


# --- snapshots -----------------------------------------------------------------------------


def test_a_joining_node_takes_the_configuration_from_the_snapshot_it_installs():
    c, leader = running(spares=1)
    change(c, leader, (1, 2, 3), (4,))
    c.deliver(lambda m: 4 not in (m.src, m.dst), drop_rest=True)
    for k in range(5):
        c.propose(1, b"k%d" % k)
    c.deliver(lambda m: 4 not in (m.src, m.dst), drop_rest=True)
    snap_at = leader.applied
    c.storage[1].save_snapshot(
        SnapshotMeta(snap_at, leader.log.term_at(snap_at), leader.log.membership_at(snap_at)),
        (),
    )
    leader.compact(snap_at)
    assert leader.log.snapshot_membership == Membership((1, 2, 3), learners=(4,))
    joiner = c.start(4)
    assert joiner.membership == Membership((1, 2, 3))  # the bootstrap one: not a voter in it
    c.tick(1, CONFIG.heartbeat_interval)
    c.deliver(lambda m: not isinstance(m, InstallSnapshot))
    (install,) = [m for m in c.queue if isinstance(m, InstallSnapshot)]
    assert install.dst == 4 and install.snapshot.membership == Membership((1, 2, 3), learners=(4,))
    joiner.step(install)
    rd = joiner.ready()
    assert rd.snapshot == install.snapshot
    assert joiner.membership == Membership((1, 2, 3), learners=(4,))
