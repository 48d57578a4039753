"""Invariants of one node, as code (after LogCabin's RaftConsensusInvariants).

The simulator calls `check_node` on every node after every step, and
`check_transition` on the views taken before and after the step. Properties that
need the whole cluster (Election Safety, Log Matching, ...) live in raftproc.sim.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftproc.core.messages import NodeId
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER


class InvariantViolation(Exception):
    pass


@dataclass(frozen=True, slots=True)
class NodeView:
    """What a step may change and the rules say how."""

    node_id: NodeId
    current_term: int
    voted_for: NodeId | None
    leader_id: NodeId | None
    commit_index: int

    @classmethod
    def of(cls, node: RaftNode) -> NodeView:
        return cls(node.id, node.current_term, node.voted_for, node.leader_id, node.commit_index)


def check_node(node: RaftNode) -> None:
    """Cheap, per-step checks of one node's state."""
    log = node.log
    if not (node.commit_index <= log.last_index):
        raise InvariantViolation(f"node {node.id}: commit_index {node.commit_index} > last index {log.last_index}")
    if not (log.snapshot_index <= node.applied <= node.commit_index):
        raise InvariantViolation(f"node {node.id}: applied {node.applied} > commit_index {node.commit_index}")
    if not (log.snapshot_index <= log.stable_index <= log.written_index <= log.last_index):
        raise InvariantViolation(f"node {node.id}: stable {log.stable_index} / written {log.written_index} outside the log")
    if not (log.last_term <= node.current_term):
        raise InvariantViolation(f"node {node.id}: log term {log.last_term} > current term {node.current_term}")
    if node.role == LEADER:
        if not (node.voted_for == node.id):
            raise InvariantViolation(f"node {node.id}: leader of term {node.current_term} voted for {node.voted_for}")
        if not (node.leader_id == node.id):
            raise InvariantViolation(f"node {node.id}: leader follows {node.leader_id}")
        for peer, pr in node.progress.items():
            if not (pr.match_index < pr.next_index):
                raise InvariantViolation(f"node {node.id}: peer {peer} match {pr.match_index} >= next {pr.next_index}")
            if not (pr.next_index <= log.last_index + 1):
                raise InvariantViolation(f"node {node.id}: peer {peer} next {pr.next_index} past the log")


def check_log(node: RaftNode) -> None:
    """Full walk of the log: indexes dense, terms never decrease. O(log length)."""
    previous_term = node.log.snapshot_term
    for i in range(node.log.first_index, node.log.last_index + 1):
        e = node.log.entry(i)
        if not (e.index == i):
            raise InvariantViolation(f"node {node.id}: entry at {i} says index {e.index}")
        if not (e.term >= previous_term):
            raise InvariantViolation(f"node {node.id}: term goes down from {previous_term} to {e.term} at {i}")
        previous_term = e.term


def check_transition(before: NodeView, after: NodeView, *, restarted: bool = False) -> None:
    """Rules across one step of a running node. A restart may lose the in-memory
    commit index and leader, but never the term or vote (they were persisted). A node
    may forget its term's leader (it presumes it dead), never switch to another."""
    if not (after.current_term >= before.current_term):
        raise InvariantViolation(f"node {after.node_id}: term went back {before.current_term} -> {after.current_term}")
    same_term = after.current_term == before.current_term
    if same_term and before.voted_for is not None:
        if not (after.voted_for == before.voted_for):
            raise InvariantViolation(
                f"node {after.node_id}: voted for {before.voted_for} then {after.voted_for} in term {after.current_term}"
            )
    if restarted:
        return
    if not (after.commit_index >= before.commit_index):
        raise InvariantViolation(f"node {after.node_id}: commit_index went back {before.commit_index} -> {after.commit_index}")
    if same_term and before.leader_id is not None and after.leader_id is not None:
        if not (after.leader_id == before.leader_id):
            raise InvariantViolation(
                f"node {after.node_id}: leader of term {after.current_term} changed {before.leader_id} -> {after.leader_id}"
            )
