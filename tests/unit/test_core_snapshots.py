"""Snapshots in the core: compaction, InstallSnapshot on both sides, and the Ready
that tells a host to install one. The simulator sweeps these under faults; these
scripts pin each rule down on its own."""

from __future__ import annotations

import pytest
from harness import Cluster

from raftproc.core import Entry, RaftNode
from raftproc.core.log import LogInvariantError, RaftLog
from raftproc.core.messages import AppendEntries, AppendEntriesResponse, InstallSnapshot, Membership, SnapshotMeta
from raftproc.core.progress import PROBE, REPLICATE, SNAPSHOT


def log_of(*terms: int) -> RaftLog:
    return RaftLog([Entry(t, i, b"x") for i, t in enumerate(terms, start=1)])


def test_compacted_log_keeps_indexes_and_the_snapshot_term():
    log = log_of(1, 1, 2, 2, 3)
    log.compact(3)
    assert (log.first_index, log.last_index, len(log)) == (4, 5, 2)
    assert log.term_at(3) == 2  # the snapshot's last entry: still checkable
    assert log.term_at(2) is None and log.is_compacted(2)
    assert log.term_at(0) == 0
    assert [e.index for e in log.slice(4, 6)] == [4, 5]
    assert log.first_index_of_term(4) == 4  # the run of term 2 continues into the snapshot
    assert log.last_index_of_term(2) == 4 and log.last_index_of_term(1) is None
    with pytest.raises(LogInvariantError):
        log.slice(2, 5)
    with pytest.raises(LogInvariantError):
        log.truncate_from(3)
    log.restore(10, 4, Membership((1, 2, 3)))
    assert (log.last_index, log.last_term, log.stable_index, log.written_index) == (10, 4, 10, 10)


def elect_and_fill(c: Cluster, n: int) -> RaftNode:
    c.node(1).campaign()
    c.process(1)
    c.deliver()
    leader = c.node(1)
    for k in range(n):
        leader.propose(b"c%d" % k)
    c.process(1)
    c.deliver()
    return leader


def test_leader_sends_install_snapshot_to_a_follower_behind_its_snapshot():
    c = Cluster(3)
    leader = elect_and_fill(c, 3)
    c.crash(3)
    for k in range(5):
        leader.propose(b"d%d" % k)
    c.process(1)
    c.deliver()
    assert leader.commit_index == 9 and leader.applied == 9
    leader.compact(9)
    assert len(leader.log) == 0 and leader.log.snapshot_index == 9
    c.start(3)
    leader.report_unreachable(3)  # the host saw the connection come back
    leader.tick()  # a heartbeat: probe 3 from where it matched (4), which is compacted
    for _ in range(3):
        leader.tick()
    c.process(1)
    sent = [m for m in c.queue if m.dst == 3]
    assert any(isinstance(m, InstallSnapshot) and m.snapshot.index == 9 for m in sent), sent
    assert leader.progress[3].state == SNAPSHOT


def test_follower_restores_from_a_snapshot_its_log_does_not_hold():
    follower = RaftNode(2, (1, 2, 3), rng=__import__("random").Random(1), entries=[Entry(1, 1), Entry(1, 2), Entry(2, 3)])
    follower.step(InstallSnapshot(src=1, dst=2, term=5, snapshot=SnapshotMeta(10, 4, Membership((1, 2, 3)))))
    rd = follower.ready()
    assert rd.snapshot == SnapshotMeta(10, 4, Membership((1, 2, 3)))
    assert rd.entries == () and rd.committed_entries == ()
    assert rd.hard_state is not None and rd.hard_state.commit_index == 10
    ack = [m for m in rd.messages if isinstance(m, AppendEntriesResponse)]
    assert ack and ack[0].success and ack[0].match_index == 10
    follower.advance(rd)
    assert (follower.log.last_index, follower.log.last_term, follower.applied, follower.commit_index) == (10, 4, 10, 10)
    assert not follower.has_ready()


def test_follower_keeps_entries_after_a_snapshot_its_log_already_holds():
    """Figure 13 step 6: same index and term as the snapshot's last entry -> retain
    the entries after it; the state machine catches up from the log."""
    entries = [Entry(1, i, b"e%d" % i) for i in range(1, 8)]
    follower = RaftNode(2, (1, 2, 3), rng=__import__("random").Random(1), entries=entries)
    follower.step(InstallSnapshot(src=1, dst=2, term=1, snapshot=SnapshotMeta(5, 1, Membership((1, 2, 3)))))
    rd = follower.ready()
    assert rd.snapshot is None
    assert [e.index for e in rd.committed_entries] == [1, 2, 3, 4, 5]
    assert follower.log.last_index == 7
    follower.advance(rd)


def test_append_starting_inside_the_snapshot_keeps_only_what_follows_it():
    follower = RaftNode(2, (1, 2, 3), rng=__import__("random").Random(1), snapshot=SnapshotMeta(5, 1, Membership((1, 2, 3))), applied=5)
    msg = AppendEntries(
        src=1, dst=2, term=1, prev_log_index=3, prev_log_term=1, entries=tuple(Entry(1, i) for i in range(4, 9)), leader_commit=8
    )
    follower.step(msg)
    rd = follower.ready()
    assert [e.index for e in rd.entries] == [6, 7, 8]
    assert [m.match_index for m in rd.messages] == [8]
    follower.advance(rd)
    # Nothing past the snapshot: acknowledge the commit index, which certainly matches.
    follower.step(AppendEntries(src=1, dst=2, term=1, prev_log_index=1, prev_log_term=1, entries=(Entry(1, 2),), leader_commit=8))
    rd = follower.ready()
    assert [(m.success, m.match_index) for m in rd.messages] == [(True, 8)]


def test_snapshot_transfer_outcome_moves_the_leader_on():
    c = Cluster(3)
    leader = elect_and_fill(c, 4)
    leader.compact(leader.applied)
    pr = leader.progress[2]
    pr.match_index, pr.next_index = 0, 1
    pr.become_probe()
    leader.tick()
    leader.tick()
    leader.tick()
    assert pr.state == SNAPSHOT and pr.pending_snapshot == 5
    leader.report_snapshot(2, success=False)
    assert pr.state != SNAPSHOT and pr.next_index == 1
    leader.tick()
    leader.tick()
    leader.tick()
    assert pr.state == SNAPSHOT
    leader.report_snapshot(2, success=True)
    assert pr.next_index == 6
    leader.step(AppendEntriesResponse(src=2, dst=1, term=leader.current_term, success=True, match_index=5))
    assert pr.state == REPLICATE and pr.match_index == 5


def test_compaction_past_applied_is_refused():
    c = Cluster(3)
    leader = elect_and_fill(c, 2)
    with pytest.raises(LogInvariantError):
        leader.compact(leader.applied + 1)


def test_unreachable_peer_is_probed_again_from_where_the_probe_stood():
    """A new leader has matched nothing yet (match 0). Losing the connection to a peer
    it probes must not send the probe back to index 1 (the whole log again, a few
    entries per message); a peer it streamed to restarts from its known match."""
    c = Cluster(3)
    elect_and_fill(c, 20)
    new = c.elect(2)
    probe_at = new.progress[3].next_index
    assert new.progress[3].state == PROBE and new.progress[3].match_index == 0 and probe_at > 20
    new.report_unreachable(3)
    assert new.progress[3].next_index == probe_at and new.progress[3].state == PROBE
    c.process(2)
    c.deliver()  # the probe matches: 3 is streamed to from here on
    assert new.progress[3].state == REPLICATE
    match = new.progress[3].match_index
    new.propose(b"more")
    c.process(2)  # in flight, then the connection drops
    new.report_unreachable(3)
    assert new.progress[3].next_index == match + 1 and new.progress[3].state == PROBE


def test_no_compaction_past_what_is_durable_in_the_log():
    """Background sync: a follower applies a committed entry whose write (which cut a
    stale tail) is not durable yet. A snapshot there could come back after a power
    cut followed by the stale tail, so compaction waits for persisted()."""
    import random

    follower = RaftNode(2, (1, 2, 3), rng=random.Random(1), entries=[Entry(1, 1), Entry(1, 2), Entry(2, 3), Entry(2, 4)])
    follower.step(AppendEntries(src=1, dst=2, term=3, prev_log_index=2, prev_log_term=1, entries=(Entry(3, 3),), leader_commit=3))
    rd = follower.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(3, 3)] and rd.committed_entries[-1].index == 3
    follower.advance(rd, persisted=False)  # written and applied, the sync still running
    assert follower.applied == 3 and follower.log.stable_index == 2
    with pytest.raises(LogInvariantError, match="past the durable index 2"):
        follower.compact(3)
    follower.persisted(3, 3)
    follower.compact(3)
    assert follower.log.snapshot_index == 3
