"""Two logs that Raft says agree, and do not.

Log Matching (paper §5.3) says that entries at the same index with the same term
are the same entry, with the same history before it. That holds while every node
keeps what it reported durable. A node whose data directory was put back to an
older copy, or whose disk dropped acknowledged writes, can forget its vote and its
entries; the cluster can then elect two leaders for one term, and two histories
grow under the same terms. Compared by terms alone they look alike and merge
silently: acknowledged writes vanish, and replicas apply different commands at
the same index.

The follower therefore checks content as well as terms on every append that
matches by term. It compares the chain link at prev_log_index (raftproc.core.log)
and the bytes of every entry it already holds at the same index and term. It also
refuses a leader that contradicts an entry it knows is committed. Any of these
means the two logs have different histories. Nobody can tell which side holds
the acknowledged writes, so the node keeps its log as evidence, follows and votes
for nobody, and says so. The leader hears it in the rejection and raises the alarm
too.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftproc.core.log import RaftLog
from raftproc.core.membership import NodeId
from raftproc.core.messages import AppendEntries, SnapshotMeta


@dataclass(frozen=True, slots=True)
class Divergence:
    index: int  # where the histories are first known to differ
    local_term: int  # the term this node holds there
    leader_term: int  # the term the leader holds there
    leader: NodeId
    reason: str

    def describe(self) -> str:
        return (
            f"log diverged from leader {self.leader}'s at index {self.index} (term {self.local_term} here, "
            f"{self.leader_term} on the leader): {self.reason}"
        )


def check_append(log: RaftLog, msg: AppendEntries, commit_index: int) -> Divergence | None:
    """An AppendEntries whose prev_log_term matched: does its content contradict us?"""
    prev = msg.prev_log_index
    ours = log.hash_at(prev)
    if msg.prev_log_hash is not None and ours is not None and ours != msg.prev_log_hash:
        return Divergence(
            prev,
            msg.prev_log_term,
            msg.prev_log_term,
            msg.src,
            "the same term there, but a different history up to it (chain links differ)",
        )
    for e in msg.entries:
        local = log.term_at(e.index)
        if local is None:
            break
        if local != e.term:
            if e.index <= commit_index:
                return Divergence(e.index, local, e.term, msg.src, "the leader contradicts an entry this node knows is committed")
            break  # an ordinary conflict: uncommitted entries of a deposed leader
        if log.entry(e.index).command != e.command:
            return Divergence(e.index, local, e.term, msg.src, "the same index and term, a different command")
    return None


def check_snapshot(log: RaftLog, snap: SnapshotMeta, leader: NodeId, commit_index: int) -> Divergence | None:
    """A snapshot from the leader: does it contradict what we hold at its index?"""
    local = log.term_at(snap.index)
    if local is None and snap.index > log.last_index:
        # The snapshot reaches past our log. Its links before snap.index are gone, so
        # only terms can be compared: a committed entry of ours whose term is past the
        # snapshot's last term cannot be among the entries the snapshot covers.
        known = min(commit_index, log.last_index)
        known_term = log.term_at(known)
        if known > log.snapshot_index and known_term is not None and known_term > snap.term:
            return Divergence(
                known,
                known_term,
                snap.term,
                leader,
                "the leader's snapshot covers an entry this node knows is committed, from a later term",
            )
        return None
    if local is None:
        return None  # an older snapshot than ours: nothing of it is left to compare
    if local != snap.term:
        if snap.index <= commit_index:
            return Divergence(
                snap.index, local, snap.term, leader, "the leader's snapshot contradicts an entry this node knows is committed"
            )
        return None
    ours = log.hash_at(snap.index)
    if snap.hash is not None and ours is not None and ours != snap.hash:
        return Divergence(snap.index, local, snap.term, leader, "the leader's snapshot has another history under the same term")
    return None
