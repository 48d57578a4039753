"""Ready: what a node asks its host to do, and the order the host must keep.

This is the one statement of the contract. The core relies on it, the Ready driver
(raftproc.server.driver) carries it out for the node and for the simulator, and the
simulator checks it at every write, send and apply (raftproc.sim).

For one Ready, the host:

1. Installs `snapshot`, when set, before anything else: what earlier Readies wrote
   is made durable (and the messages waiting for it leave), `hard_state` is made
   durable (the snapshot's term may be newer than the stored one), then the
   snapshot the host received for it (the InstallSnapshot it stepped in) becomes
   the node's newest durable snapshot, storage forgets every entry it holds (none
   written before it may come back on a restart), and the state machine is
   restored from it.
2. Persists `hard_state` (when not None) and `entries`: storage drops every entry it
   holds with index >= entries[0].index, then appends `entries`. Persisted means
   fsynced, either now (inline) or by a background sync that the host reports
   later with `persisted(index, term)` for the last entry.
3. Sends `messages`, in two kinds (`split_messages`):
   - a leader's AppendEntries and InstallSnapshot may leave before step 2 completes
     (Raft thesis §10.2.1), so the leader's fsync and its followers' run in
     parallel. They promise nothing about the leader's storage: it was elected
     under a term and vote persisted in an earlier Ready, and it counts itself
     toward a commit only for entries its storage holds (persisted());
   - every other message (a vote, an append acknowledgement or refusal) leaves only
     once step 2 is durable: it may promise what step 2 stored. Raft paper,
     Figure 2: "updated on stable storage before responding". Messages held for a
     sync leave in the order they were made.
4. Applies `committed_entries` to the state machine, in order, then serves
   `read_states`. This needs nothing from step 2, so it may come before step 2 is
   durable, or after: an entry is committed only once a majority holds it
   durably, and a leader counts itself only for entries its own storage holds.
   (The driver applies before the fsync when no message waits for it, a leader's
   Ready, so answers to clients do not wait for the fsync.)
5. Calls node.advance(ready), with persisted=False while step 2 still syncs in
   the background.

No step(), tick() or propose() may run between ready() and advance().
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(slots=True, init=False)
class Ready:
    # Built by hand (init=False), not frozen: under mypyc a dataclass's generated
    # __init__ stays interpreted Python (a frozen one a setattr call per field), and
    # every loop pass with work makes one. Treated as immutable all the same.
    # Installed (and the log dropped) before anything else (step 1); None almost always.
    snapshot: SnapshotMeta | None
    # Durable before any message but a leader's appends leaves (steps 2-3). None: unchanged since last Ready.
    hard_state: HardState | None
    # Durable before any message but a leader's appends leaves. Replaces stored entries from entries[0].index on.
    entries: tuple[Entry, ...]
    # A leader's appends may leave at once; the rest only once hard_state and entries are durable (step 3).
    messages: tuple[Message, ...]
    # Committed and durable on a majority: apply in order, before or after this Ready's own write (step 4).
    committed_entries: tuple[Entry, ...]
    # Reads confirmed by ReadIndex (or a lease): serve each once `index` is applied.
    read_states: tuple[ReadState, ...]

    def __init__(
        self,
        snapshot: SnapshotMeta | None = None,
        hard_state: HardState | None = None,
        entries: tuple[Entry, ...] = (),
        messages: tuple[Message, ...] = (),
        committed_entries: tuple[Entry, ...] = (),
        read_states: tuple[ReadState, ...] = (),
    ) -> None:
        self.snapshot = snapshot
        self.hard_state = hard_state
        self.entries = entries
        self.messages = messages
        self.committed_entries = committed_entries
        self.read_states = read_states

    def is_empty(self) -> bool:
        return not (self.snapshot or self.hard_state or self.entries or self.messages or self.committed_entries or self.read_states)


def split_messages(rd: Ready) -> tuple[list[Message], list[Message]]:
    """(may go before persisting, must wait until persisted): step 3 of the contract above."""
    early: list[Message] = []
    after: list[Message] = []
    for m in rd.messages:
        # An InstallSnapshot, like an append, promises nothing about the sender's disk.
        (early if isinstance(m, (AppendEntries, InstallSnapshot)) else after).append(m)
    return early, after
