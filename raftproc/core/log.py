"""The in-memory Raft log of one node.

Indexes start at 1; index 0 with term 0 is the empty prefix every log shares, so
`term_at(0) == 0` and AppendEntries with prev_log_index 0 always matches.

The log also tracks how much of itself the host has been given to write
(`written_index`: the entries above it are what the next Ready hands out) and how
much is known to be durable (`stable_index`). With a synchronous host the two move
together; a host that syncs in the background reports durability later, through
RaftNode.persisted(). A truncation pulls both down, because storage must then drop
those entries too (the host replaces everything from the first entry it is given).

Invariant: terms never decrease along the log (enforced on every append).
Invariant: 0 <= stable_index <= written_index <= last_index.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from raftproc.core.messages import Entry


def _term(entry: Entry) -> int:
    return entry.term


class LogInvariantError(AssertionError):
    """The core was asked to do something that would break a log invariant."""


class RaftLog:
    __slots__ = ("_entries", "stable_index", "written_index")

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: list[Entry] = []
        self.stable_index = 0
        self.written_index = 0
        self.append(list(entries))
        self.stable_index = self.written_index = self.last_index

    # --- reading -------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else 0

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; 0 for index 0; None past the end."""
        if index == 0:
            return 0
        if 0 < index <= len(self._entries):
            return self._entries[index - 1].term
        return None

    def entry(self, index: int) -> Entry:
        return self._entries[index - 1]

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries with index in the half-open range [lo, hi)."""
        lo = max(lo, 1)
        return tuple(self._entries[lo - 1 : hi - 1])

    def unstable(self) -> tuple[Entry, ...]:
        return tuple(self._entries[self.written_index :])

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries sharing the term at `index`.
        Terms never decrease along the log, so a binary search finds it: a follower
        rejecting an append must not walk back through a million-entry term."""
        term = self.term_at(index)
        return bisect_left(self._entries, term, hi=index, key=_term) + 1

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding `term`, or None when the log has no such entry."""
        i = bisect_right(self._entries, term, key=_term)
        if i and self._entries[i - 1].term == term:
            return i
        return None

    def is_up_to_date(self, last_log_index: int, last_log_term: int) -> bool:
        """§5.4.1: is a log ending at (last_log_term, last_log_index) at least as
        up-to-date as this one? Compare last terms first, then lengths."""
        if last_log_term != self.last_term:
            return last_log_term > self.last_term
        return last_log_index >= self.last_index

    # --- writing -------------------------------------------------------------

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        for e in entries:
            if e.index != len(self._entries) + 1:
                raise LogInvariantError(f"append of index {e.index} to log ending at {self.last_index}")
            if e.term < self.last_term:
                raise LogInvariantError(f"term {e.term} at {e.index} after term {self.last_term}")
            self._entries.append(e)

    def truncate_from(self, index: int) -> None:
        """Drop every entry with index >= `index`."""
        del self._entries[index - 1 :]
        self.stable_index = min(self.stable_index, index - 1)
        self.written_index = min(self.written_index, index - 1)

    def __len__(self) -> int:
        return len(self._entries)
