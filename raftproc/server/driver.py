"""The Ready driver: the one place that carries out a core's Ready.

The node (raftproc.server.host) and the simulator (raftproc.sim) both run this
class; they differ only in the collaborators they hand it, each a small protocol
below: the node passes its WAL, sockets and key-value store, the simulator
in-memory twins that can lose unsynced writes and check every promise as it
leaves (hashicorp/raft's InmemStore/InmemTransport pattern). So what the
simulator's sweep proves about persist-before-send is proven about this code.

It keeps the Ready contract stated in raftproc.core.ready, and makes these choices
within it:

- a snapshot is installed first, and the rest of that Ready is synced inline,
  whatever the sync mode;
- a leader's appends are sent at once;
- when no message waits for the write (a leader's Ready), it applies and serves
  reads before the write, and `flush()` pushes the answers out before the fsync
  (applying after the fsync made every answer wait for the next batch's fsync);
- otherwise it applies after handing the write over: inline, after the fsync and
  the sends (a follower's acknowledgement is what the leader waits for); in the
  background, at once, while the messages wait;
- under background sync the messages that promise a write are held, in order,
  until `on_synced`, which then reports `persisted()`; a record that needs no sync
  still waits behind earlier held ones, so messages never overtake;
- the core advances last (persisted=False under background sync).

Nothing else calls the core's advance() or persisted().

A full disk (ENOSPC or EDQUOT from a write) stalls the Ready instead of ending the
process: storage leaves no part of the failed record behind, the messages that
wait on it stay unsent and the core does not advance (what was applied before the
write was committed and is not applied again on the retry; an apply after the write waits for it). The core, mid-Ready,
must not be stepped, ticked or asked anything until `retry()` gets the write
through (the host holds everything back while `stalled`). A failed sync is
another matter: storage raises its own error and the process ends (after a failed
fsync the kernel may have dropped the data, so no retry can make it durable).
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from mypy_extensions import mypyc_attr

from raftproc.core.messages import Entry, Message, SnapshotMeta
from raftproc.core.node import RaftNode
from raftproc.core.ready import ReadState, Ready, split_messages


class LogStorage(Protocol):
    def write(self, rd: Ready) -> bool:
        """Hand a Ready's hard state and entries to storage, not yet durable. True
        when it promises something (entries, a new term or vote) and so must be
        synced before the messages that depend on it leave."""

    def sync(self) -> None:
        """Make everything written so far durable; returns after the fsync."""


class Syncer(Protocol):
    def request(self, seq: int) -> None:
        """Sync at least up to write number `seq` (counting from 1) and report it,
        later, through Driver.on_synced."""


class Transport(Protocol):
    def send(self, messages: Sequence[Message]) -> None: ...

    def flush(self) -> None:
        """Push out what send() queued, before a slow step (the fsync)."""


class StateMachine(Protocol):
    def apply(self, entries: Sequence[Entry]) -> None:
        """Apply committed entries, in order (deterministic on every replica)."""

    def serve_reads(self, read_states: Sequence[ReadState]) -> None:
        """Reads the core confirmed: answer each once its index is applied."""


class SnapshotInstaller(Protocol):
    def install(self, meta: SnapshotMeta) -> None:
        """Make the snapshot received for `meta` the newest durable one, drop every
        stored entry, and restore the state machine from it."""


# Compiled, the class still takes Python subclasses: the simulator's planted-bug tests subclass the driver to break one rule each.
@mypyc_attr(allow_interpreted_subclasses=True)
class Driver:
    def __init__(
        self,
        raft: RaftNode,
        *,
        storage: LogStorage,
        transport: Transport,
        state_machine: StateMachine,
        installer: SnapshotInstaller,
        syncer: Syncer | None = None,
        on_ready: Callable[[Ready], None] | None = None,
    ) -> None:
        """`syncer` None: fsync inline. `on_ready` sees each Ready before anything
        is done with it (the node learns addresses from configuration entries there,
        the simulator notes what each message promises)."""
        self.raft = raft
        self.storage = storage
        self.transport = transport
        self.state_machine = state_machine
        self.installer = installer
        self.syncer = syncer
        self.on_ready = on_ready
        self.written = 0  # Ready records handed to storage
        # Background sync: (write number, messages that wait for it, its last entry).
        # Invariant: write numbers increase from head to tail.
        self.held: deque[tuple[int, list[Message], tuple[int, int] | None]] = deque()
        # A Ready whose write found the disk full: (the Ready, whether its install and
        # early messages are done).
        self.stalled: tuple[Ready, bool] | None = None
        self.disk_full_error = ""

    def handle_ready(self) -> None:
        raft = self.raft
        while self.stalled is None and raft.has_ready():
            rd = raft.ready()
            if self.on_ready is not None:
                self.on_ready(rd)
            self._carry_out(rd, started=False)
        if self.held:
            assert self.syncer is not None
            self.syncer.request(self.written)

    def retry(self) -> bool:
        """Carry out the stalled Ready again from where it stopped; True once it went
        through (the caller then runs handle_ready() for what waited behind it)."""
        if self.stalled is None:
            return True
        rd, started = self.stalled
        self.stalled = None
        # _carry_out may stall it again, so its answer says: the type checker (and so
        # the compiled build, which trusts it) keeps self.stalled narrowed to None.
        went_through = self._carry_out(rd, started=started)
        if went_through and self.held:
            assert self.syncer is not None
            self.syncer.request(self.written)
        return went_through

    def _carry_out(self, rd: Ready, *, started: bool) -> bool:
        """One Ready, as the module's docstring says. `started`: the install, the early
        sends and an apply before the write are done already (a retry after the write
        found the disk full). False: the write found the disk full and it is stalled."""
        early, after = split_messages(rd)
        inline = self.syncer is None or rd.snapshot is not None
        apply_first = not after  # nothing waits for the write: the answers need not either
        try:
            if not started:
                if rd.snapshot is not None:
                    self._install(rd)
                if early:
                    self.transport.send(early)
                if apply_first:
                    self._apply(rd)
                started = True
                self.transport.flush()
            if inline:
                self._persist_inline(rd, after)
            else:
                self._persist_background(rd, after)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.stalled = (rd, started)
            self.disk_full_error = f"{errno.errorcode[e.errno]}: {e.strerror}"
            return False
        if not apply_first:
            self._apply(rd)
        self.raft.advance(rd, persisted=inline)
        return True

    def _apply(self, rd: Ready) -> None:
        self.state_machine.apply(rd.committed_entries)
        self.state_machine.serve_reads(rd.read_states)

    def _write(self, rd: Ready) -> bool:
        promises = self.storage.write(rd)
        self.written += 1  # only writes that happened: the syncer counts them
        return promises

    def _persist_inline(self, rd: Ready, after: list[Message]) -> None:
        if self._write(rd):
            self.storage.sync()
        self.transport.send(after)

    def _persist_background(self, rd: Ready, after: list[Message]) -> None:
        needs_sync = self._write(rd)
        last = (rd.entries[-1].index, rd.entries[-1].term) if rd.entries else None
        if needs_sync or self.held:
            self.held.append((self.written, after, last))
        else:
            self.transport.send(after)

    def on_synced(self, synced: int) -> None:
        """Writes up to number `synced` are durable: what waited for them leaves, and
        the core hears which entries its storage now holds. The caller runs
        handle_ready() afterwards (persisted() may commit and so make a Ready)."""
        held = self.held
        while held and held[0][0] <= synced:
            _, after, last = held.popleft()
            self.transport.send(after)
            if last is not None:
                self.raft.persisted(*last)

    def _install(self, rd: Ready) -> None:
        assert rd.snapshot is not None
        if self.held:
            # Written before the snapshot: durable first, so no held promise is lost
            # with the log the install drops.
            self.storage.sync()
            while self.held:
                self.transport.send(self.held.popleft()[1])
        if rd.hard_state is not None:
            self._write(Ready(hard_state=rd.hard_state))
            self.storage.sync()
        self.installer.install(rd.snapshot)
