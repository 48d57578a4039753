"""The Raft core: a deterministic, IO-free state machine (see node.py)."""

from raftproc.core.membership import Membership
from raftproc.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    describe,
)
from raftproc.core.node import RaftNode
from raftproc.core.ready import HardState, Ready
from raftproc.core.types import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    MembershipChangeRefused,
    NotLeader,
    RaftOptions,
)

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "CANDIDATE",
    "RaftOptions",
    "MembershipChangeRefused",
    "Entry",
    "FOLLOWER",
    "HardState",
    "LEADER",
    "Membership",
    "Message",
    "NodeId",
    "NotLeader",
    "RaftNode",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "describe",
]
