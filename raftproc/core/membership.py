"""Cluster membership: who votes, who only listens, and what a quorum is.

A configuration lives in the log, as an entry like any other (Raft paper §6), and a
node uses the newest one its log holds, committed or not ("a configuration takes
effect as soon as a node appends it"). Before the first such entry the cluster runs
under the configuration it was bootstrapped with.

Changing the voters goes through joint consensus: the leader first appends a joint
configuration, in which `voters` are the new voters and `outgoing` the old ones, and
every decision (a commit, an election, a read round, a lease, CheckQuorum) needs a
majority of *each* half. Once the joint entry commits, the leader appends the plain
new configuration. No majority of either configuration can decide alone while the
change is in flight, so the old and new configurations never both elect or commit.

Learners receive the log but never vote and are never counted: a new node catches
up as a learner before a change makes it a voter, so adding it does not leave the
cluster waiting for its log while its vote already counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from raftproc.core.quorum import majority, quorum_index

NodeId = int


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[NodeId, ...]
    # Joint consensus: the voters of the configuration being left; empty otherwise.
    outgoing: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        for name in ("voters", "outgoing", "learners"):
            object.__setattr__(self, name, tuple(sorted(set(getattr(self, name)))))
        if set(self.learners) & (set(self.voters) | set(self.outgoing)):
            raise ValueError(f"a node cannot be a voter and a learner at once: {self.describe()}")

    @property
    def is_joint(self) -> bool:
        return bool(self.outgoing)

    @property
    def all_voters(self) -> tuple[NodeId, ...]:
        return tuple(sorted(set(self.voters) | set(self.outgoing)))

    @property
    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted(set(self.voters) | set(self.outgoing) | set(self.learners)))

    def is_voter(self, node: NodeId) -> bool:
        return node in self.voters or node in self.outgoing

    def committed_index(self, match: Mapping[NodeId, int], default: int = 0) -> int:
        """The highest index a majority of every half holds (`match` per node; a
        node missing from it holds `default`). Works for any value that a majority
        must reach: read rounds, the ticks a lease counts from."""
        index = _half_index(self.voters, match, default)
        if self.outgoing:
            index = min(index, _half_index(self.outgoing, match, default))
        return index

    def has_quorum(self, nodes: Iterable[NodeId]) -> bool:
        """Do `nodes` include a majority of every half? (Never, with no voters.)"""
        present = set(nodes)
        return bool(self.voters) and all(
            sum(1 for v in half if v in present) >= majority(len(half)) for half in (self.voters, self.outgoing) if half
        )

    def vote_won(self, votes: Mapping[NodeId, bool]) -> bool:
        return self.has_quorum(node for node, granted in votes.items() if granted)

    def describe(self) -> str:
        text = "voters=" + ",".join(map(str, self.voters))
        if self.outgoing:
            text += " outgoing=" + ",".join(map(str, self.outgoing))
        if self.learners:
            text += " learners=" + ",".join(map(str, self.learners))
        return text


def _half_index(half: tuple[NodeId, ...], match: Mapping[NodeId, int], default: int) -> int:
    if not half:
        return default
    return quorum_index((match.get(v, default) for v in half), len(half))


EMPTY = Membership(())
