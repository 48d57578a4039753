"""The messages Raft servers exchange, and the entries they replicate.

Every message is a slotted dataclass that names its sender (`src`) and receiver
(`dst`), so the simulator and the TCP transport route them the same way. Messages
and entries are never changed once made: most are frozen, and the few made for
every write (Entry, AppendEntries and its response) are immutable by convention,
since a frozen __init__ costs a setattr call per field.
Field names follow the Raft paper (Figure 2). `describe()` gives the one compact
text form used in logs, test failures and simulator traces.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftproc.core.membership import Membership, NodeId


@dataclass(slots=True, init=False)
class Entry:
    """One log entry. `command` is None for the no-op a new leader appends (§8).

    A configuration entry (raftproc.core.membership) carries the new `membership`; its
    `command` is then the host's own description of it (addresses, say), opaque to
    the core and never applied to the state machine.
    """

    # Built by hand (init=False), not frozen: under mypyc a dataclass's generated
    # __init__ stays interpreted Python (a frozen one a setattr call per field), and
    # every write makes one on every node. Treated as immutable all the same.
    term: int
    index: int
    command: bytes | None
    membership: Membership | None

    def __init__(self, term: int, index: int, command: bytes | None = None, membership: Membership | None = None) -> None:
        self.term = term
        self.index = index
        self.command = command
        self.membership = membership


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: every entry up to `index` (whose term is `term`),
    applied, under the cluster configuration `membership` (the newest one in those
    entries), whose addresses the host described in `addresses`, as in its entry."""

    index: int
    term: int
    membership: Membership
    addresses: bytes | None = None  # opaque to the core: the host's address book of the members
    hash: bytes | None = None  # the log's chain link at `index` (raftproc.core.log); None: unknown


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    src: NodeId
    dst: NodeId
    term: int
    last_log_index: int
    last_log_term: int
    # PreVote (Raft thesis §9.6): "would you vote for me in `term`?" Answering changes
    # nothing on the voter; the sender has not moved to `term` either.
    pre_vote: bool = False
    # The leader asked the candidate to take over (TimeoutNow): voters answer even
    # though they heard that leader recently (thesis §3.10).
    transfer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    src: NodeId
    dst: NodeId
    term: int
    vote_granted: bool
    pre_vote: bool = False


@dataclass(slots=True, kw_only=True, init=False)
class AppendEntries:
    # Built by hand (init=False), not frozen: under mypyc a dataclass's generated
    # __init__ stays interpreted Python (a frozen one a setattr call per field), and
    # the leader sends one to each follower in every round. Treated as immutable all the same.
    src: NodeId
    dst: NodeId
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    # The leader's read round when it sent this (ReadIndex, raftproc.core.node):
    # echoed in the answer, it proves the follower still took this node for its
    # leader after every read of that round or earlier arrived.
    read_round: int
    # The leader's chain link at prev_log_index (raftproc.core.log): the same term
    # there must also mean the same history (raftproc.core.divergence). None: unknown.
    prev_log_hash: bytes | None

    def __init__(
        self,
        *,
        src: NodeId,
        dst: NodeId,
        term: int,
        prev_log_index: int,
        prev_log_term: int,
        entries: tuple[Entry, ...] = (),
        leader_commit: int,
        read_round: int = 0,
        prev_log_hash: bytes | None = None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.term = term
        self.prev_log_index = prev_log_index
        self.prev_log_term = prev_log_term
        self.entries = entries
        self.leader_commit = leader_commit
        self.read_round = read_round
        self.prev_log_hash = prev_log_hash


@dataclass(slots=True, kw_only=True, init=False)
class AppendEntriesResponse:
    """A follower's answer to AppendEntries.

    On success `match_index` is the index of the last entry the request carried
    (prev_log_index + len(entries)): the follower's log matches the leader's up to it.

    On rejection `rejected_index` repeats the request's prev_log_index so the leader
    can ignore stale rejections, and the hint lets it skip a whole term per round trip:
    `conflict_term` is the term the follower holds at prev_log_index and
    `conflict_index` the first index it holds for that term; when the follower's log
    is simply too short, `conflict_term` is None and `conflict_index` is its last
    index + 1.
    """

    # Built by hand (init=False), not frozen: under mypyc a dataclass's generated
    # __init__ stays interpreted Python (a frozen one a setattr call per field), and
    # each follower answers every round with one. Treated as immutable all the same.
    src: NodeId
    dst: NodeId
    term: int
    success: bool
    match_index: int
    rejected_index: int
    conflict_term: int | None
    conflict_index: int
    read_round: int  # the request's read round, echoed
    # The follower found its history differs from the leader's where Raft says they
    # agree (raftproc.core.divergence): it follows nobody until an operator acts.
    diverged: bool

    def __init__(
        self,
        *,
        src: NodeId,
        dst: NodeId,
        term: int,
        success: bool,
        match_index: int = 0,
        rejected_index: int = 0,
        conflict_term: int | None = None,
        conflict_index: int = 0,
        read_round: int = 0,
        diverged: bool = False,
    ) -> None:
        self.src = src
        self.dst = dst
        self.term = term
        self.success = success
        self.match_index = match_index
        self.rejected_index = rejected_index
        self.conflict_term = conflict_term
        self.conflict_index = conflict_index
        self.read_round = read_round
        self.diverged = diverged


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """A leader's "your log must start from my snapshot" (paper Figure 13).

    The core never sees snapshot bytes. On the leader, this message tells the host
    to stream its newest snapshot (covering at least `snapshot.index`) to `dst`; on
    the follower, the host steps it in once the whole file has arrived and been made
    durable, with the metadata of the snapshot actually received. The follower
    answers with an AppendEntriesResponse, as for an append.
    """

    src: NodeId
    dst: NodeId
    term: int
    snapshot: SnapshotMeta


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leadership transfer (thesis §3.10): the leader, having brought `dst` up to
    date, tells it to start an election now."""

    src: NodeId
    dst: NodeId
    term: int


Message = RequestVote | RequestVoteResponse | AppendEntries | AppendEntriesResponse | InstallSnapshot | TimeoutNow

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    TimeoutNow,
)


def describe_entries(entries: tuple[Entry, ...]) -> str:
    if not entries:
        return "[]"
    first, last = entries[0], entries[-1]
    if len(entries) == 1:
        return f"[{first.term}/{first.index}]"
    return f"[{first.term}/{first.index}..{last.term}/{last.index}]"


def describe(msg: Message) -> str:
    """One line per message, e.g. `1->2 AppendEntries term=3 prev=3/7 entries=[3/8] commit=7`."""
    name = type(msg).__name__
    if isinstance(msg, (RequestVote, RequestVoteResponse)) and msg.pre_vote:
        name = name.replace("RequestVote", "PreVote")
    head = f"{msg.src}->{msg.dst} {name} term={msg.term}"
    match msg:
        case RequestVote():
            return f"{head} last={msg.last_log_term}/{msg.last_log_index}"
        case RequestVoteResponse():
            return f"{head} granted={msg.vote_granted}"
        case AppendEntries():
            return (
                f"{head} prev={msg.prev_log_term}/{msg.prev_log_index} entries={describe_entries(msg.entries)} commit={msg.leader_commit}"
            )
        case InstallSnapshot():
            return f"{head} snapshot={msg.snapshot.term}/{msg.snapshot.index}"
        case TimeoutNow():
            return head
        case AppendEntriesResponse():
            if msg.success:
                return f"{head} ok match={msg.match_index}"
            return f"{head} reject at={msg.rejected_index} hint={msg.conflict_term}/{msg.conflict_index}"
    raise TypeError(f"not a raft message: {msg!r}")
