"""The Raft core: a deterministic, IO-free state machine (see node.py)."""

from raftproc.core.config import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    Config,
    ConfigChangeRefused,
    NotLeader,
)
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

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "CANDIDATE",
    "Config",
    "ConfigChangeRefused",
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
