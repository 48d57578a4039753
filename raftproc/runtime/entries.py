"""One CBOR shape for log entries and configurations, shared by the wire, the WAL
and snapshot files: an entry is [term, index, command] or, for a configuration
entry, [term, index, context, [voters, outgoing, learners]]. The context of a
configuration entry (and of a snapshot) is the address book of its members:
{id: ["host:port" for peers, "host:port" for clients]}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2

from raftproc.core.messages import Entry, Membership
from raftproc.kv import cbor
from raftproc.kv.cbor import COMPILED
from raftproc.runtime.addresses import parse_address


def encode_entry(e: Entry) -> list[Any]:
    if e.membership is None:
        return [e.term, e.index, e.command]
    return [e.term, e.index, e.command, encode_membership(e.membership)]


# The entries encoded last, and their CBOR array: a leader's AppendEntries to every
# follower and its own WAL record usually carry the same run of new entries, and
# this encodes it once; a follower keeps here the run it just read off the wire
# (remember_run), which its WAL record then writes. A run is a contiguous piece of
# one log, which only ever changes by cutting a suffix and appending: the same
# first and last entry objects and the same length mean the same entries (the
# references held here keep those objects' identities from being reused). A run
# read off the wire is kept before it is checked; if the check refuses it, its
# freshly made entries never join a log, so nothing can ever ask for them. One
# batch, dropped at the next.
_last_run: tuple[Entry, Entry, int, bytes] | None = None


def entries_cbor(entries: Sequence[Entry]) -> bytes:
    """cbor2.dumps([encode_entry(e) for e in entries]), for a run of one log's entries."""
    global _last_run
    if not entries:
        return b"\x80"
    first, last = entries[0], entries[-1]
    kept = _last_run
    if kept is not None and kept[0] is first and kept[1] is last and kept[2] == len(entries):
        return kept[3]
    data = _plain_run(entries) if COMPILED else None
    if data is None:
        # The plain shape inline: this runs for every entry written or sent.
        data = cbor2.dumps([[e.term, e.index, e.command] if e.membership is None else encode_entry(e) for e in entries])
    _last_run = (first, last, len(entries), data)
    return data


def _plain_run(entries: Sequence[Entry]) -> bytes | None:
    """entries_cbor of a run without configuration entries, written piece by piece
    (compiled, a third of cbor2's cost: no list per entry); None for any other run."""
    out: list[bytes] = []
    try:
        cbor.put_head(out, cbor.ARRAY, len(entries))
        for e in entries:
            if e.membership is not None:
                return None
            out.append(b"\x83")  # an array of three
            cbor.put_uint(out, e.term)
            cbor.put_uint(out, e.index)
            cbor.put_bytes_or_null(out, e.command)
    except cbor.Unhandled:
        return None
    return b"".join(out)


def read_plain_run(r: cbor.Reader) -> tuple[Entry, ...] | None:
    """The inverse of _plain_run, from the reader's position: a run without
    configuration entries (None for one with any, which cbor2 then reads). Only
    shortest forms are read (cbor.Reader), so the bytes read are what _plain_run
    writes for these entries, byte for byte."""
    entries = []
    for _ in range(r.count(cbor.ARRAY)):
        if r.initial() != 0x83:
            return None  # a configuration entry: four elements
        entries.append(Entry(r.uint(), r.uint(), r.bytes_or_null()))
    return tuple(entries)


def remember_run(entries: tuple[Entry, ...], data: bytes) -> None:
    """`data` is entries_cbor(entries), as read off the wire: a follower writes to its
    WAL the run it received, and this spares encoding it again."""
    global _last_run
    if entries:
        _last_run = (entries[0], entries[-1], len(entries), data)


def with_entries(head: bytes, key: bytes, entries: Sequence[Entry]) -> bytes:
    """`head`, the CBOR of a map of fewer than 23 pairs, with one more pair: the
    encoded `key` and these entries' array."""
    return b"".join(pieces_with_entries(head, key, entries))


def pieces_with_entries(head: bytes, key: bytes, entries: Sequence[Entry]) -> tuple[bytes, bytes, bytes, bytes]:
    """with_entries in pieces, for a caller that joins them with others (one copy of
    the entries, not one per concatenation). A small map keeps its pair count in its
    first byte (0xa0 + n), so the pair is appended and the count raised by one."""
    assert 0xA0 <= head[0] < 0xA0 + 23, "not a small CBOR map"
    return bytes((head[0] + 1,)), head[1:], key, entries_cbor(entries)


def decode_entry(item: Any) -> Entry:
    """Raises ValueError for anything that is not an entry of the shape above."""
    if not isinstance(item, list) or len(item) not in (3, 4):
        raise ValueError("malformed entry")
    term, index, command = item[0], item[1], item[2]
    if not (_is_count(term) and _is_count(index) and (command is None or isinstance(command, bytes))):
        raise ValueError("malformed entry")
    config = decode_membership(item[3]) if len(item) == 4 else None
    return Entry(term, index, command, config)


def encode_membership(m: Membership) -> list[list[int]]:
    return [list(m.voters), list(m.outgoing), list(m.learners)]


def decode_membership(value: Any) -> Membership:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("malformed configuration")
    halves = []
    for half in value:
        if not isinstance(half, list) or not all(_is_count(n) and n > 0 for n in half):
            raise ValueError("malformed configuration")
        halves.append(tuple(half))
    return Membership(*halves)  # raises ValueError for a voter that is also a learner


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is not int by type(); CBOR decodes to plain int


def encode_addresses(book: dict[int, tuple[tuple[str, int], tuple[str, int]]]) -> bytes:
    return cbor2.dumps({i: [f"{p[0]}:{p[1]}", f"{c[0]}:{c[1]}"] for i, (p, c) in sorted(book.items())})


def decode_addresses(data: bytes) -> dict[int, tuple[tuple[str, int], tuple[str, int]]]:
    """Raises ValueError for anything but the shape above."""
    try:
        raw = cbor2.loads(data)
    except Exception as e:
        raise ValueError(f"address book is not CBOR: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("address book is not a map")
    book = {}
    for node, pair in raw.items():
        if not (_is_count(node) and isinstance(pair, list) and len(pair) == 2 and all(isinstance(a, str) for a in pair)):
            raise ValueError("malformed address book entry")
        book[node] = (parse_address(pair[0]), parse_address(pair[1]))
    return book
