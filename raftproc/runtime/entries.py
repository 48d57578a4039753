"""One CBOR shape for log entries and configurations, shared by the wire, the WAL
and snapshot files: an entry is [term, index, command] or, for a configuration
entry, [term, index, context, [voters, outgoing, learners]]. The context of a
configuration entry (and of a snapshot) is the address book of its members:
{id: ["host:port" for peers, "host:port" for clients]}."""

from __future__ import annotations

from typing import Any

import cbor2

from raftproc.core.messages import Entry, Membership
from raftproc.runtime.addresses import parse_address


def encode_entry(e: Entry) -> list[Any]:
    if e.membership is None:
        return [e.term, e.index, e.command]
    return [e.term, e.index, e.command, encode_membership(e.membership)]


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
