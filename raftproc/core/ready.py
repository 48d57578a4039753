"""Ready: what the host must do for a node, in order, before calling advance().

The host handles a Ready in exactly this order:

1. When `snapshot` is set: install the snapshot the host received for it (the
   InstallSnapshot the host stepped in): it becomes the node's newest durable
   snapshot, storage forgets every entry it holds (entries written before it must
   never come back on a restart), and the state machine is restored from it.
   Then persist `hard_state` (when not None) and `entries`, and fsync. Storage first
   drops every entry it holds with index >= entries[0].index, then appends `entries`.
2. Send `messages`. Only now: they may promise (a vote, an append acknowledgement)
   what step 1 made durable. Raft paper, Figure 2: "respond to RPCs" comes after
   "updated on stable storage before responding".
   The one exception: a leader's AppendEntries may be sent before step 1 (Raft
   thesis §10.2.1), so the leader's fsync and its followers' run in parallel. They
   promise nothing about the leader's storage: the leader was elected under a term
   and vote persisted in an earlier Ready, and it counts itself toward a commit only
   for entries its own storage holds (advance() reports them). `split_messages`
   separates the two kinds.
3. Apply `committed_entries` to the state machine, in order.
4. Call node.advance(ready).

No step(), tick() or propose() may run between ready() and advance().
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftproc.core.messages import (
    AppendEntries,
    Entry,
    InstallSnapshot,
    Message,
    NodeId,
    SnapshotMeta,
)


@dataclass(frozen=True, slots=True)
class HardState:
    """The state a node must find again after a crash.

    `commit_index` is persisted only to let a restart re-apply its log without
    waiting for a leader; losing it is harmless (it is never ahead of what a
    majority stores).
    """

    current_term: int = 0
    voted_for: NodeId | None = None
    commit_index: int = 0


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read the leader confirmed: answer read `request` once the state machine has
    applied `index` (it then reflects every write committed before the read arrived)."""

    request: int
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    # Installed (and the log dropped) before anything else; None almost always.
    snapshot: SnapshotMeta | None = None
    # Persisted and fsynced BEFORE messages are sent. None: unchanged since last Ready.
    hard_state: HardState | None = None
    # Persisted and fsynced BEFORE messages are sent. Replaces stored entries from entries[0].index on.
    entries: tuple[Entry, ...] = ()
    # Sent only after hard_state and entries are durable.
    messages: tuple[Message, ...] = ()
    # Committed and durable on a majority; apply in order.
    committed_entries: tuple[Entry, ...] = field(default=())
    # Reads confirmed by ReadIndex (or a lease): serve each once `index` is applied.
    read_states: tuple[ReadState, ...] = field(default=())

    def is_empty(self) -> bool:
        return not (self.snapshot or self.hard_state or self.entries or self.messages or self.committed_entries or self.read_states)


def split_messages(rd: Ready) -> tuple[list[Message], list[Message]]:
    """(may go before persisting, must wait until persisted): see step 2 above."""
    early: list[Message] = []
    after: list[Message] = []
    for m in rd.messages:
        # An InstallSnapshot, like an append, promises nothing about the sender's disk.
        (early if isinstance(m, (AppendEntries, InstallSnapshot)) else after).append(m)
    return early, after
