"""Two histories under the same terms are told apart at the first exchange
(raftproc.core.divergence): the follower keeps its log, follows and votes for
nobody, and the leader hears of it and stops sending."""

from __future__ import annotations

import random

from raftproc.core import AppendEntries, Entry, RaftNode
from raftproc.core.log import ZERO_HASH, RaftLog, chain
from raftproc.core.membership import Membership
from raftproc.core.messages import AppendEntriesResponse, InstallSnapshot, RequestVote, RequestVoteResponse, SnapshotMeta
from raftproc.core.ready import HardState
from raftproc.server.status import log_digest

VOTERS = (1, 2, 3)


def follower(entries, commit=0, term=3) -> RaftNode:
    return RaftNode(2, VOTERS, rng=random.Random(1), hard_state=HardState(term, None, commit), entries=entries)


def answers(node: RaftNode) -> list:
    rd = node.ready()
    node.advance(rd)
    return list(rd.messages)


def links(entries) -> list[bytes]:
    log = RaftLog(entries)
    return [log.hash_at(e.index) for e in entries]


def test_the_chain_tells_apart_logs_that_terms_alone_do_not():
    ours = [Entry(1, 1, b"a"), Entry(2, 2, b"b"), Entry(2, 3, None)]
    theirs = [Entry(1, 1, b"a"), Entry(2, 2, b"B"), Entry(2, 3, None)]
    assert links(ours)[0] == links(theirs)[0] == chain(ZERO_HASH, ours[0])
    assert links(ours)[1] != links(theirs)[1] and links(ours)[2] != links(theirs)[2], "a difference carries forward"
    assert chain(ZERO_HASH, Entry(1, 1, None)) != chain(ZERO_HASH, Entry(1, 1, b"")), "a no-op is not an empty command"
    log = RaftLog(ours)
    log.compact(2)
    assert log.hash_at(2) == log.snapshot_hash == links(ours)[1] and log.hash_at(3) == links(ours)[2]
    log.truncate_from(3)
    log.append([Entry(3, 3, b"c")])
    assert log.hash_at(3) == chain(links(ours)[1], Entry(3, 3, b"c"))
    log.restore(10, 4, Membership(VOTERS), None)
    assert log.hash_at(10) is None, "a snapshot without a link leaves the chain unknown, not wrong"


def test_same_term_at_prev_with_another_history_is_divergence_not_a_match():
    """The silent merge of the restored-copy scenario: two leaders of term 2 wrote
    different entries at 2; the follower's term at prev matches, its history does not."""
    node = follower([Entry(1, 1, b"a"), Entry(2, 2, b"acked by a majority")])
    theirs = links([Entry(1, 1, b"a"), Entry(2, 2, b"the other side's write")])
    node.step(
        AppendEntries(
            src=1,
            dst=2,
            term=3,
            prev_log_index=2,
            prev_log_term=2,
            entries=(Entry(3, 3, b"new"),),
            leader_commit=3,
            prev_log_hash=theirs[1],
        )
    )
    [reply] = answers(node)
    assert isinstance(reply, AppendEntriesResponse) and not reply.success and reply.diverged
    assert node.diverged is not None and node.diverged.index == 2 and node.diverged.leader == 1
    assert node.log.last_index == 2 and node.log.entry(2).command == b"acked by a majority", "the log is kept as evidence"
    assert node.commit_index == 0 and node.leader_id is None


def test_an_entry_held_under_the_same_term_with_other_bytes_is_divergence():
    node = follower([Entry(1, 1, b"a"), Entry(2, 2, b"mine")])
    node.step(
        AppendEntries(
            src=1,
            dst=2,
            term=3,
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(2, 2, b"yours"),),
            leader_commit=2,
            prev_log_hash=links([Entry(1, 1, b"a")])[0],
        )
    )
    [reply] = answers(node)
    assert reply.diverged and node.diverged.index == 2 and "different command" in node.diverged.reason


def test_a_leader_contradicting_a_committed_entry_is_divergence_and_changes_nothing():
    node = follower([Entry(1, 1, b"a"), Entry(1, 2, b"b")], commit=2, term=3)
    assert node.commit_index == 2
    node.step(AppendEntries(src=1, dst=2, term=9, prev_log_index=1, prev_log_term=1, entries=(Entry(9, 2, b"forged"),), leader_commit=2))
    [reply] = answers(node)
    assert reply.diverged and "committed" in node.diverged.reason
    assert node.log.entry(2).command == b"b" and node.commit_index == 2


def test_a_diverged_node_follows_votes_and_campaigns_for_nobody():
    node = follower([Entry(1, 1, b"a"), Entry(2, 2, b"mine")])
    node.step(AppendEntries(src=1, dst=2, term=3, prev_log_index=1, prev_log_term=1, entries=(Entry(2, 2, b"yours"),), leader_commit=2))
    answers(node)
    # A later, correct-looking append is refused as well: the node follows nobody.
    node.step(AppendEntries(src=3, dst=2, term=4, prev_log_index=0, prev_log_term=0, entries=(), leader_commit=0))
    [reply] = answers(node)
    assert reply.diverged and not reply.success
    for _ in range(200):
        node.tick()
    assert node.role == "follower" and not [m for m in answers(node) if isinstance(m, RequestVote)], "never campaigns"
    node.step(RequestVote(src=3, dst=2, term=5, last_log_index=9, last_log_term=4, pre_vote=True))
    node.step(RequestVote(src=3, dst=2, term=5, last_log_index=9, last_log_term=4))
    assert not [m for m in answers(node) if getattr(m, "vote_granted", False)]
    assert node._vote_refusal(RequestVote(src=3, dst=2, term=5, last_log_index=9, last_log_term=4)) is not None


def test_a_snapshot_with_another_history_under_the_same_term_is_divergence():
    node = follower([Entry(1, 1, b"a"), Entry(2, 2, b"mine")])
    other = links([Entry(1, 1, b"a"), Entry(2, 2, b"yours")])[1]
    node.step(InstallSnapshot(src=1, dst=2, term=3, snapshot=SnapshotMeta(2, 2, Membership(VOTERS), hash=other)))
    [reply] = answers(node)
    assert reply.diverged and node.diverged.index == 2 and node.log.entry(2).command == b"mine"


def test_the_leader_hears_of_it_raises_it_and_stops_sending_to_that_peer():
    leader = RaftNode(1, VOTERS, rng=random.Random(1))
    leader.become_candidate()
    answers(leader)
    for voter in (2, 3):
        leader.step(RequestVoteResponse(src=voter, dst=1, term=leader.current_term, vote_granted=True))
    assert leader.role == "leader"
    answers(leader)
    leader.step(AppendEntriesResponse(src=2, dst=1, term=leader.current_term, success=False, rejected_index=0, diverged=True))
    assert leader.peer_divergences == {2: 0}
    leader.step(AppendEntriesResponse(src=3, dst=1, term=leader.current_term, success=True, match_index=leader.log.last_index))
    answers(leader)
    leader.propose(b"x")
    sent = [m for m in answers(leader) if isinstance(m, AppendEntries)]
    assert {m.dst for m in sent} == {3}, "nothing more goes to the diverged follower"
    assert all(m.prev_log_hash == leader.log.hash_at(m.prev_log_index) for m in sent)


def test_correct_logs_never_look_diverged():
    """Every append a correct leader sends carries its link, and a correct follower
    (behind, caught up, or holding a deposed leader's uncommitted tail) matches it."""
    node = follower([Entry(1, 1, b"a"), Entry(2, 2, b"deposed leader's, uncommitted")])
    leader_log = [Entry(1, 1, b"a"), Entry(3, 2, None), Entry(3, 3, b"c")]
    hashes = links(leader_log)
    node.step(
        AppendEntries(
            src=1, dst=2, term=3, prev_log_index=1, prev_log_term=1, entries=tuple(leader_log[1:]), leader_commit=3, prev_log_hash=hashes[0]
        )
    )
    [reply] = answers(node)
    assert reply.success and not reply.diverged and node.diverged is None
    assert node.log.hash_at(3) == hashes[2]
    # A duplicate of the same append: entries held under the same term and bytes.
    node.step(
        AppendEntries(
            src=1, dst=2, term=3, prev_log_index=1, prev_log_term=1, entries=tuple(leader_log[1:]), leader_commit=3, prev_log_hash=hashes[0]
        )
    )
    [again] = answers(node)
    assert again.success and node.diverged is None


def _leader_with_acks() -> RaftNode:
    leader = RaftNode(1, VOTERS, rng=random.Random(1))
    leader.become_candidate()
    answers(leader)
    for voter in (2, 3):
        leader.step(RequestVoteResponse(src=voter, dst=1, term=leader.current_term, vote_granted=True))
    answers(leader)
    for _ in range(3):
        leader.propose(b"w")
    answers(leader)
    for peer in (2, 3):
        leader.step(
            AppendEntriesResponse(
                src=peer, dst=1, term=leader.current_term, success=True, match_index=leader.log.last_index, read_round=leader.reads.round
            )
        )
    answers(leader)
    return leader


def test_a_follower_that_refuses_what_it_acknowledged_has_lost_data_and_is_alarmed():
    """Follower 2 acknowledged index 4, then (restored from an old copy) answers a
    later round's append saying its log ends at 1: its log went backwards."""
    leader = _leader_with_acks()
    acked = leader.progress[2].match_index
    # A reject from before the acknowledgement (an earlier round) is stale, not an alarm.
    leader.step(
        AppendEntriesResponse(
            src=2,
            dst=1,
            term=leader.current_term,
            success=False,
            rejected_index=acked,
            conflict_index=2,
            read_round=leader.progress[2].match_round,
        )
    )
    assert leader.peer_divergences == {}
    leader.read_index(7)  # a new round of heartbeats, sent after the acknowledgement arrived
    answers(leader)
    leader.step(
        AppendEntriesResponse(
            src=2, dst=1, term=leader.current_term, success=False, rejected_index=acked, conflict_index=2, read_round=leader.reads.round
        )
    )
    assert leader.peer_divergences == {2: acked} and leader.progress[2].diverged


def test_a_chaos_run_fails_on_any_divergence_alarm_in_the_logs():
    from raftproc.ops.chaos import _judge_alarms
    from raftproc.ops.nemesis import Nemesis

    nemesis = Nemesis(cluster=None, rng=random.Random(1))  # type: ignore[arg-type]
    quiet = {"log_diverged": 0, "peer_diverged": 0, "peer_log_regressed": 0}
    assert _judge_alarms(nemesis, ["kill"], quiet) == [("no history diverged", True, "no node found its log contradicting another's")]
    for event in quiet:
        [(name, ok, said)] = _judge_alarms(nemesis, ["kill"], {**quiet, event: 1})
        assert name == "no history diverged" and not ok and "1 divergence alarms" in said
    nemesis.violations.append("node 2 started on a corrupt WAL")
    assert ("corrupt storage refused", False, "node 2 started on a corrupt WAL") in _judge_alarms(nemesis, ["corrupt"], quiet)


def test_a_snapshot_past_our_log_that_contradicts_a_committed_entry_by_term_is_divergence():
    """The leader compacted past our log, so no append with a content check comes:
    a committed entry of a later term than the snapshot's last cannot be in it."""
    ours = [Entry(1, 1, b"a"), Entry(3, 2, b"committed in term 3")]
    node = follower(ours, commit=2, term=3)
    node.step(InstallSnapshot(src=1, dst=2, term=4, snapshot=SnapshotMeta(10, 2, Membership(VOTERS), hash=bytes(16))))
    [reply] = answers(node)
    assert reply.diverged and node.log.last_index == 2, "kept as evidence, not replaced"
    # The same snapshot over entries of an earlier term is an ordinary catch-up.
    behind = follower([Entry(1, 1, b"a"), Entry(2, 2, b"b")], commit=2, term=3)
    behind.step(InstallSnapshot(src=1, dst=2, term=4, snapshot=SnapshotMeta(10, 2, Membership(VOTERS), hash=bytes(16))))
    answers(behind)
    assert behind.diverged is None and behind.log.snapshot_index == 10


def test_a_diverged_node_takes_no_timeout_now_and_is_never_a_transfer_target():
    node = follower([Entry(1, 1, b"a"), Entry(2, 2, b"mine")])
    node.step(AppendEntries(src=1, dst=2, term=3, prev_log_index=1, prev_log_term=1, entries=(Entry(2, 2, b"yours"),), leader_commit=2))
    answers(node)
    from raftproc.core.messages import TimeoutNow

    node.step(TimeoutNow(src=1, dst=2, term=3))
    assert node.role == "follower" and not answers(node), "no campaign, even when asked to take over"
    leader = _leader_with_acks()
    leader.read_index(7)
    answers(leader)
    leader.step(AppendEntriesResponse(src=2, dst=1, term=leader.current_term, success=False, rejected_index=0, diverged=True))
    import pytest

    with pytest.raises(ValueError, match="cannot lead"):
        leader.transfer_leadership(2)


def test_status_names_the_applied_log_by_its_chain_link():
    """log_digest, which convergence checks compare, is the link at the applied index:
    equal for equal logs, different for logs that differ anywhere up to it, and
    empty where a snapshot from before the chain left the link unknown."""
    ours = [Entry(1, 1, b"a"), Entry(2, 2, b"b"), Entry(2, 3, b"c")]
    theirs = [Entry(1, 1, b"a"), Entry(2, 2, b"B"), Entry(2, 3, b"c")]
    a, b = follower(ours), follower(theirs)
    assert log_digest(a, 1) == log_digest(b, 1) and len(log_digest(a, 1)) == 32
    assert log_digest(a, 3) != log_digest(b, 3)
    assert log_digest(a, 3) == log_digest(follower(list(ours)), 3)
    unknown = follower([])
    unknown.log.restore(5, 2, Membership(VOTERS), snapshot_hash=None)
    assert log_digest(unknown, 5) == ""
