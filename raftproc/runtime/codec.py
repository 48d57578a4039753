"""CBOR bodies for the wire: Raft messages between peers, requests and answers
between clients and nodes.

Every body is a CBOR map with a protocol version `v` and a type tag `t`. Decoding
checks the version, the tag, and every field's presence and type, so a body that
is valid CBOR but the wrong shape is a RemoteProtocolError for that connection,
never an exception inside the event loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cbor2

from raftproc.config import parse_address
from raftproc.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftproc.runtime.entries import decode_entry, encode_entry
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
_BOOLS = ("vote_granted", "success", "pre_vote", "ok", "transfer")
_BYTES = ("data",)
_STRS = ("reason",)


def encode_message(msg: PeerFrame) -> bytes:
    cls = type(msg)
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "t": _TAGS[cls]}
    for name in _FIELDS[cls]:
        value = getattr(msg, name)
        if name == "entries":
            value = [encode_entry(e) for e in value]
        body[name] = value
    return cbor2.dumps(body)


def decode_message(data: bytes) -> PeerFrame:
    body = _load_map(data)
    cls = _CLASSES.get(body.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {body.get('t')!r}")
    kwargs: dict[str, Any] = {}
    for name in _FIELDS[cls]:
        if name not in body:
            raise RemoteProtocolError(f"{cls.__name__} without field {name!r}")
        value = body[name]
        if name == "entries":
            value = _decode_entries(value)
        elif name in _BOOLS:
            if not isinstance(value, bool):
                raise RemoteProtocolError(f"{cls.__name__}.{name} is not a bool")
        elif name in _BYTES:
            if not isinstance(value, bytes):
                raise RemoteProtocolError(f"{cls.__name__}.{name} is not bytes")
        elif name in _STRS:
            if not isinstance(value, str):
                raise RemoteProtocolError(f"{cls.__name__}.{name} is not text")
        elif name in _INT_OR_NONE and value is None:
            pass
        elif not _is_count(value):
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


def _decode_entries(value: Any) -> tuple[Entry, ...]:
    if not isinstance(value, list):
        raise RemoteProtocolError("entries is not a list")
    try:
        return tuple(decode_entry(item) for item in value)
    except ValueError as e:
        raise RemoteProtocolError(str(e)) from None


# --- clients ---------------------------------------------------------------------

OPS = ("set", "get", "del", "cas")


def encode(body: dict[str, Any]) -> bytes:
    """A client-protocol body (request or answer), version stamped."""
    return cbor2.dumps({"v": PROTOCOL_VERSION, **body})


def decode_client_request(data: bytes) -> dict[str, Any]:
    """A request from a client: `status`, or a key-value operation. Checked fully."""
    body = _load_map(data)
    t = body.get("t")
    if not _is_count(body.get("id")):
        raise RemoteProtocolError("request without a numeric id")
    if t == "status":
        return body
    if t == "transfer":
        if not (body.get("target") is None or _is_count(body.get("target"))):
            raise RemoteProtocolError("transfer target must be a node id or null (the most up-to-date follower)")
        return body
    if t == "member":
        return _member_request(body)
    if t != "req":
        raise RemoteProtocolError(f"unknown request type {t!r}")
    op = body.get("op")
    if op not in OPS:
        raise RemoteProtocolError(f"unknown operation {op!r}")
    if not _is_count(body.get("client")) or not _is_count(body.get("seq")):
        raise RemoteProtocolError("request without client id and sequence number")
    if not isinstance(body.get("key"), str):
        raise RemoteProtocolError("key must be a string")
    if op in ("set", "cas") and not isinstance(body.get("value"), str):
        raise RemoteProtocolError(f"{op} needs a string value")
    if op == "cas" and not (body.get("expect") is None or isinstance(body.get("expect"), str)):
        raise RemoteProtocolError("cas expect must be a string or null (absent)")
    if body.get("read", "log") not in ("log", "index", "lease") or ("read" in body and op != "get"):
        raise RemoteProtocolError("read must be log, index or lease, and only on get")
    return body


def _member_request(body: dict[str, Any]) -> dict[str, Any]:
    op = body.get("op")
    if op not in ("list", "add", "remove"):
        raise RemoteProtocolError("member op must be list, add or remove")
    if op == "list":
        return body
    if not _is_count(body.get("node")) or body["node"] < 1:
        raise RemoteProtocolError(f"member {op} needs a positive node id")
    if op == "add":
        addresses = body.get("addresses")
        if not isinstance(addresses, list) or len(addresses) != 2 or not all(isinstance(a, str) for a in addresses):
            raise RemoteProtocolError("member add needs the node's peer and client addresses, HOST:PORT each")
        try:
            body["addresses"] = tuple(parse_address(a) for a in addresses)
        except ValueError as e:
            raise RemoteProtocolError(str(e)) from None
    return body


def decode_answer(data: bytes) -> dict[str, Any]:
    body = _load_map(data)
    if body.get("t") != "resp" or not _is_count(body.get("id")):
        raise RemoteProtocolError("not an answer")
    return body


# --- helpers ---------------------------------------------------------------------


def _load_map(data: bytes) -> dict[str, Any]:
    try:
        body = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for bad input
        raise RemoteProtocolError(f"invalid CBOR: {e}") from None
    if not isinstance(body, dict):
        raise RemoteProtocolError("body is not a map")
    if body.get("v") != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"unsupported protocol version {body.get('v')!r}")
    return body


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
