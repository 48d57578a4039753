"""CBOR bodies for the wire: Raft messages between peers, requests and answers
between clients and nodes.

Every body is a CBOR map with a protocol version `v` and a type tag `t`. Decoding
checks the version, the tag, and every field's presence and type, so a body that
is valid CBOR but the wrong shape is a RemoteProtocolError for that connection,
never an exception inside the event loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, TypeGuard

import cbor2

from raftproc.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftproc.kv import cbor
from raftproc.kv.cbor import COMPILED, Unhandled
from raftproc.runtime.entries import decode_entry, read_plain_run, remember_run, with_entries
from raftproc.runtime.identity import PeerHello, PeerRefused
from raftproc.runtime.transfer import SnapshotAck, SnapshotChunk

# 2: configuration entries (membership changes) and the peer hello; 1 had
# command entries only.
PROTOCOL_VERSION = 2
PeerFrame = Message | SnapshotChunk | SnapshotAck | PeerHello | PeerRefused


class RemoteProtocolError(Exception):
    """The other side sent a body we cannot accept (h11's name for the peer's fault)."""


# --- Raft messages ---------------------------------------------------------------

_TAGS: dict[type, str] = {
    RequestVote: "rv",
    RequestVoteResponse: "rvr",
    AppendEntries: "ae",
    AppendEntriesResponse: "aer",
    TimeoutNow: "tn",
    # InstallSnapshot travels as a stream of chunks (raftproc.runtime.transfer).
    SnapshotChunk: "sc",
    SnapshotAck: "sa",
    # Opens every peer connection (raftproc.runtime.identity).
    PeerHello: "hi",
    PeerRefused: "no",
}
_CLASSES = {tag: cls for cls, tag in _TAGS.items()}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TAGS}
# Field -> accepted Python types (bool is checked apart: it is a subclass of int).
_INT_OR_NONE = ("conflict_term",)
_BOOLS = ("vote_granted", "success", "pre_vote", "ok", "transfer", "diverged")
_BYTES = ("data",)
_HASHES = ("prev_log_hash",)  # a log chain link (raftproc.core.log) or None
HASH_BYTES = 16
# Fields added after version 2 shipped: a peer that predates them sends none, which
# reads as their default (no chain link, no divergence), so a rolling upgrade works.
_OPTIONAL = ("prev_log_hash", "diverged")
_STRS = ("reason",)
# Fields renamed after version 2 shipped keep their name on the wire.
_WIRE_NAMES = {"read_round": "context"}


_ENTRIES_KEY = cbor2.dumps("entries")


def encode_message(msg: PeerFrame) -> bytes:
    cls = type(msg)
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "t": _TAGS[cls]}
    entries = None
    for name in _FIELDS[cls]:
        value = getattr(msg, name)
        if name == "entries":
            entries = value  # last, from bytes made once for every follower and the WAL
            continue
        body[_WIRE_NAMES.get(name, name)] = value
    if entries is None:
        return cbor2.dumps(body)
    return with_entries(cbor2.dumps(body), _ENTRIES_KEY, entries)


def decode_message(data: bytes) -> PeerFrame:
    body = _load_append(data) if COMPILED and data.startswith(_APPEND_HEAD, 1) else None
    if body is None:
        body = load_map(data)
    t = body.get("t")
    cls = _CLASSES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise RemoteProtocolError("unknown message type")
    kwargs: dict[str, Any] = {}
    for name in _FIELDS[cls]:
        wire_name = _WIRE_NAMES.get(name, name)
        if wire_name not in body:
            if name in _OPTIONAL:
                continue
            raise RemoteProtocolError(f"{cls.__name__} without field {wire_name!r}")
        value = body[wire_name]
        if name == "entries":
            # A tuple of Entry objects already when _load_append read the frame (cbor2
            # gives a list).
            value = value if type(value) is tuple else _decode_entries(value)
        elif name in _BOOLS:
            if not isinstance(value, bool):
                raise RemoteProtocolError(f"{cls.__name__}.{name} is not a bool")
        elif name in _BYTES:
            if not isinstance(value, bytes):
                raise RemoteProtocolError(f"{cls.__name__}.{name} is not bytes")
        elif name in _STRS:
            if not isinstance(value, str):
                raise RemoteProtocolError(f"{cls.__name__}.{name} is not text")
        elif name in _HASHES:
            if not (value is None or (isinstance(value, bytes) and len(value) == HASH_BYTES)):
                raise RemoteProtocolError(f"{cls.__name__}.{name} is not a {HASH_BYTES}-byte hash or null")
        elif name in _INT_OR_NONE and value is None:
            pass
        elif not is_count(value):
            raise RemoteProtocolError(f"{cls.__name__}.{name} is not a non-negative integer")
        kwargs[name] = value
    msg = cls(**kwargs)
    if cls is AppendEntries:
        _check_append_shape(msg)
    return msg


def _check_append_shape(msg: AppendEntries) -> None:
    """Entries must continue the log at prev_log_index with terms that never go
    down and never pass the message's term; anything else is a broken peer."""
    if msg.prev_log_term > msg.term:
        raise RemoteProtocolError("AppendEntries prev_log_term after its own term")
    expected, term = msg.prev_log_index + 1, msg.prev_log_term
    for e in msg.entries:
        if e.index != expected or e.term < term or e.term > msg.term:
            raise RemoteProtocolError("AppendEntries entries do not continue the log")
        expected, term = expected + 1, e.term


# How encode_message begins an AppendEntries, after the map's first byte: v 2, t "ae".
_APPEND_HEAD: Final = b"".join(map(cbor2.dumps, ("v", PROTOCOL_VERSION, "t", "ae")))


def _load_append(data: bytes) -> dict[str, Any] | None:
    """The body of an AppendEntries of command entries read without cbor2, its
    entries made (a tuple) straight from the array that ends the frame, as
    encode_message writes it; None for any other shape (load_map then reads it with
    cbor2 and says what is wrong). Made directly, the entries cost a third less than
    through cbor2's lists, and their bytes are kept for the WAL record that will
    write these same entries, which then needs no encoding."""
    r = cbor.Reader(data)
    try:
        body, rest, after = cbor.map_prefix(r)
        if rest != "entries" or after or "entries" in body or body.get("v") != PROTOCOL_VERSION:
            return None  # not entries that end the frame
        start = r.pos
        run = read_plain_run(r)
    except Unhandled:
        return None
    if run is None or r.pos != len(data):
        return None
    body["entries"] = run
    remember_run(run, data[start:])
    return body


def _decode_entries(value: Any) -> tuple[Entry, ...]:
    if not isinstance(value, list):
        raise RemoteProtocolError("entries is not a list")
    try:
        return tuple(decode_entry(item) for item in value)
    except ValueError as e:
        raise RemoteProtocolError(str(e)) from None


# --- clients ---------------------------------------------------------------------


def encode(body: dict[str, Any]) -> bytes:
    """A client-protocol body (request or answer), version stamped."""
    return cbor2.dumps({"v": PROTOCOL_VERSION, **body})


# The answer to nearly every write, {v, t: resp, id, status: ok, result: {ok: true}},
# as bytes around its id: the leader sends one per write, and building and encoding
# the map each time cost more than the rest of the answer's way out.
_OK_BEFORE_ID: Final = b"\xa5" + b"".join(map(cbor2.dumps, ("v", PROTOCOL_VERSION, "t", "resp", "id")))  # 0xa5: a map of 5 pairs
_OK_AFTER_ID: Final = cbor2.dumps("status") + cbor2.dumps("ok") + cbor2.dumps("result") + cbor2.dumps({"ok": True})


def encode_ok_answer(request_id: int) -> bytes:
    """encode({"t": "resp", "id": request_id, "status": "ok", "result": {"ok": True}}), faster."""
    if COMPILED:
        out = [_OK_BEFORE_ID]
        try:
            cbor.put_uint(out, request_id)
            out.append(_OK_AFTER_ID)
            return b"".join(out)
        except Unhandled:
            pass  # not a count: decode_request lets none through, and cbor2 writes any
    return _OK_BEFORE_ID + cbor2.dumps(request_id) + _OK_AFTER_ID


def decode_answer(data: bytes) -> dict[str, Any]:
    body = load_map(data)
    if body.get("t") != "resp" or not is_count(body.get("id")):
        raise RemoteProtocolError("not an answer")
    return body


# --- helpers ---------------------------------------------------------------------


def load_map(data: bytes) -> dict[str, Any]:
    try:
        body = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for bad input
        raise RemoteProtocolError(f"invalid CBOR: {str(e)[:100]}") from None
    if not isinstance(body, dict):
        raise RemoteProtocolError("body is not a map")
    if body.get("v") != PROTOCOL_VERSION:
        raise RemoteProtocolError("unsupported protocol version")
    return body


MAX_UINT64 = (1 << 64) - 1


def is_count(value: Any) -> TypeGuard[int]:
    """A non-negative integer that fits in 64 bits: anything larger is hostile (and
    formatting a huge int can itself raise)."""
    # type() is int: excludes bool (a subclass) in one test; CBOR decodes to plain int.
    return type(value) is int and 0 <= value <= MAX_UINT64
