"""The in-memory Raft log of one node.

Indexes start at 1; index 0 with term 0 is the empty prefix every log shares, so
`term_at(0) == 0` and AppendEntries with prev_log_index 0 always matches.

The log also tracks how much of itself the host has been given to write
(`written_index`: the entries above it are what the next Ready hands out) and how
much is known to be durable (`stable_index`). With a synchronous host the two move
together; a host that syncs in the background reports durability later, through
RaftNode.persisted(). A truncation pulls both down, because storage must then drop
those entries too (the host replaces everything from the first entry it is given).

After compaction the log starts at a snapshot: entries up to `snapshot_index` are
gone from memory (a snapshot of the state machine holds their effect), and only
the term of the last one, `snapshot_term`, is kept so that an AppendEntries whose
prev_log_index is exactly there can still be checked. Everything up to
snapshot_index is committed and applied, so no later leader disagrees with it.

The log also knows the cluster configuration at every index it holds
(raftproc.core.membership): the newest configuration entry at or before it, or
the configuration the snapshot was taken under (the bootstrap one for a log that
never changed it). Truncating a configuration entry away brings the previous one
back, as §6 requires of a node whose uncommitted change is overwritten.

Every entry also carries a link of a hash chain, h_i = H(h_{i-1}, term_i, content_i)
with h_0 = ZERO_HASH, kept beside the entries and, for the snapshot's last entry,
in the snapshot. Log Matching says two logs with the same term at an index agree
on everything up to it; that is a theorem about correct storage. A node whose disk
lost writes it had reported durable, or whose data directory was put back to an
older copy, can hold another history under the same terms. Comparing chain links
tells the two apart (raftproc.core.divergence). A snapshot written before the
chain existed has no link: `snapshot_hash` is None, and so is every link after it,
and every snapshot taken from such a log (nothing is compared; a rebuilt node
starts a known chain from its leader's snapshot only if that one has a link).

Invariant: terms never decrease along the log (enforced on every append).
Invariant: snapshot_index <= stable_index <= written_index <= last_index.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from raftproc.core.membership import EMPTY, Membership
from raftproc.core.messages import Entry


def _term(entry: Entry) -> int:
    return entry.term


ZERO_HASH = bytes(16)  # the chain's link before index 1


def chain(prev: bytes, entry: Entry) -> bytes:
    """The chain link of `entry` after the link `prev`. A no-op, an empty command
    and a configuration entry hash apart (their tag byte)."""
    h = hashlib.sha256(prev)
    h.update(entry.term.to_bytes(8, "big"))
    if entry.membership is not None:
        h.update(b"c" + entry.membership.describe().encode())
    if entry.command is not None:
        h.update(b"b")
        h.update(entry.command)
    return h.digest()[:16]


class LogInvariantError(Exception):
    """The core was asked to do something that would break a log invariant."""


class RaftLog:
    __slots__ = (
        "_configs",
        "_entries",
        "_hashes",
        "snapshot_hash",
        "snapshot_index",
        "snapshot_membership",
        "snapshot_term",
        "stable_index",
        "written_index",
    )

    def __init__(
        self,
        entries: Iterable[Entry] = (),
        *,
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        membership: Membership = EMPTY,
        snapshot_hash: bytes | None = ZERO_HASH,
    ) -> None:
        """`membership`: the configuration in force at snapshot_index;
        `snapshot_hash`: the chain link there (None: unknown)."""
        self._entries: list[Entry] = []
        self._hashes: list[bytes] = []  # the chain link of each entry held
        self.snapshot_hash = snapshot_hash
        self._configs: list[tuple[int, Membership]] = []  # (index, config) of config entries held
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.snapshot_membership = membership
        self.stable_index = self.written_index = snapshot_index
        self.append([e for e in entries if e.index > snapshot_index])
        self.stable_index = self.written_index = self.last_index

    # --- reading -------------------------------------------------------------

    @property
    def first_index(self) -> int:
        """The first index still held as an entry."""
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; 0 for index 0; the snapshot's term at
        snapshot_index; None past the end or before the snapshot (compacted)."""
        if index == 0:
            return 0
        offset = index - self.snapshot_index
        if offset == 0:
            return self.snapshot_term
        if 0 < offset <= len(self._entries):
            return self._entries[offset - 1].term
        return None

    def hash_at(self, index: int) -> bytes | None:
        """The chain link at `index` (snapshot_index included); None when it is not
        held or not known."""
        offset = index - self.snapshot_index
        if offset == 0 or self.snapshot_hash is None:
            return self.snapshot_hash if offset == 0 else None
        if 0 < offset <= len(self._hashes):
            return self._hashes[offset - 1]
        return None

    def is_compacted(self, index: int) -> bool:
        return index < self.snapshot_index

    def entry(self, index: int) -> Entry:
        if index <= self.snapshot_index:
            raise LogInvariantError(f"entry {index} is compacted into the snapshot at {self.snapshot_index}")
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with index in the half-open range [lo, hi); lo past the snapshot."""
        lo = max(lo, 1)
        if lo <= self.snapshot_index and hi > lo:
            raise LogInvariantError(f"slice from {lo} reaches into the snapshot at {self.snapshot_index}")
        base = self.snapshot_index + 1
        return tuple(self._entries[lo - base : max(hi - base, 0)])

    def slice_bytes(self, lo: int, hi: int, max_bytes: int) -> tuple[Entry, ...]:
        """Like slice(lo, hi), stopping before the entry that would take the commands'
        bytes past `max_bytes`; always at least one entry when the range has one (an
        entry larger than the cap travels alone)."""
        out = self.slice(lo, hi)
        total = 0
        for n, e in enumerate(out):
            total += len(e.command) if e.command is not None else 0
            if total > max_bytes and n > 0:
                return out[:n]
        return out

    def unstable(self) -> tuple[Entry, ...]:
        return tuple(self._entries[self.written_index - self.snapshot_index :])

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term at `index`, as far
        as this log still holds it. Terms never decrease along the log, so a binary
        search finds it: a follower rejecting an append must not walk back through a
        million-entry term."""
        term = self.term_at(index)
        assert term is not None, f"index {index} is not in the log (compacted, or past its end at {self.last_index})"
        return bisect_left(self._entries, term, hi=index - self.snapshot_index, key=_term) + self.snapshot_index + 1

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding `term`, or None when the log has no such entry."""
        i = bisect_right(self._entries, term, key=_term)
        if i and self._entries[i - 1].term == term:
            return i + self.snapshot_index
        if not i and term == self.snapshot_term and self.snapshot_index:
            return self.snapshot_index
        return None

    @property
    def membership(self) -> Membership:
        """The configuration in force: the newest one the log holds."""
        return self._configs[-1][1] if self._configs else self.snapshot_membership

    @property
    def config_index(self) -> int:
        """The index of the newest configuration entry held; 0 when there is none
        past the snapshot."""
        return self._configs[-1][0] if self._configs else 0

    def membership_at(self, index: int) -> Membership:
        """The configuration in force once entries up to `index` are applied."""
        for at, config in reversed(self._configs):
            if at <= index:
                return config
        return self.snapshot_membership

    def is_up_to_date(self, last_log_index: int, last_log_term: int) -> bool:
        """§5.4.1: is a log ending at (last_log_term, last_log_index) at least as
        up-to-date as this one? Compare last terms first, then lengths."""
        if last_log_term != self.last_term:
            return last_log_term > self.last_term
        return last_log_index >= self.last_index

    # --- writing -------------------------------------------------------------

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        for e in entries:
            if e.index != self.last_index + 1:
                raise LogInvariantError(f"append of index {e.index} to log ending at {self.last_index}")
            if e.term < self.last_term:
                raise LogInvariantError(f"term {e.term} at {e.index} after term {self.last_term}")
            self._entries.append(e)
            self._hashes.append(chain(self._hashes[-1] if self._hashes else self.snapshot_hash or ZERO_HASH, e))
            if e.membership is not None:
                self._configs.append((e.index, e.membership))

    def truncate_from(self, index: int) -> None:
        """Drop every entry with index >= `index`."""
        if index <= self.snapshot_index:
            raise LogInvariantError(f"truncation from {index} into the snapshot at {self.snapshot_index}")
        del self._entries[index - self.snapshot_index - 1 :]
        del self._hashes[index - self.snapshot_index - 1 :]
        while self._configs and self._configs[-1][0] >= index:
            self._configs.pop()
        self.stable_index = min(self.stable_index, index - 1)
        self.written_index = min(self.written_index, index - 1)

    def compact(self, index: int) -> None:
        """Forget entries up to `index`: a durable snapshot now covers them."""
        if index <= self.snapshot_index:
            return
        if index > self.last_index:
            raise LogInvariantError(f"compaction to {index} past the log's end at {self.last_index}")
        term = self.term_at(index)
        assert term is not None
        self.snapshot_membership = self.membership_at(index)
        self._configs = [(at, c) for at, c in self._configs if at > index]
        self.snapshot_hash = self.hash_at(index)
        del self._entries[: index - self.snapshot_index]
        del self._hashes[: index - self.snapshot_index]
        self.snapshot_index, self.snapshot_term = index, term
        # The snapshot holds these entries' effect durably, written or not.
        self.written_index = max(self.written_index, index)
        self.stable_index = max(self.stable_index, index)

    def restore(self, index: int, term: int, membership: Membership, snapshot_hash: bytes | None = None) -> None:
        """Replace the whole log by a snapshot ending at (index, term)."""
        self._entries = []
        self._hashes = []
        self.snapshot_hash = snapshot_hash
        self._configs = []
        self.snapshot_membership = membership
        self.snapshot_index, self.snapshot_term = index, term
        self.stable_index = self.written_index = index

    def __len__(self) -> int:
        """Entries held in memory (not counting the snapshot)."""
        return len(self._entries)
