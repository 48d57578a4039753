"""The client protocol, both ways: what clients ask of a node as typed requests,
and the node's answers as typed answers with an `Outcome`.

`decode_request` turns one client frame into exactly one of the request classes
below, or raises RemoteProtocolError: every field present, of its type, in its
range (integers are non-negative and fit in 64 bits, strings are bounded), tags and
operations from a closed set. The client service never sees an unchecked value.
`encode_request` is its inverse, for clients; `encode_answer` and `decode_answer`
are the pair for answers.

Requests: `status`, `transfer`, `member` (list, add, remove), `links`, `redis`
(commands a node's RESP port forwards to the leader), and `req`, a
key-value operation: set, get, del, cas, scan (a page of a range read) and
register (a new client asks for its id). A value is text, or bytes when it is not
UTF-8 text; the store keeps it as it came.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from raftproc.kv import cbor
from raftproc.kv.cbor import COMPILED, Unhandled, short_text_code
from raftproc.runtime import codec
from raftproc.runtime.addresses import Address, parse_address
from raftproc.runtime.codec import RemoteProtocolError, encode, is_count, load_map
from raftproc.runtime.linkfaults import LinkFaults, LinkFaultsError, parse_link_faults

KV_OPS = ("set", "get", "del", "cas", "scan", "register")
MAX_SCAN_LIMIT = 10_000
READ_MODES = ("index", "log", "lease")  # the first is a client's default
MEMBER_OPS = ("list", "add", "remove")
MAX_KEY_CHARS = 4096
MAX_REDIS_COMMANDS = 10_000  # in one MULTI block; its bytes are bounded by max_request_bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRequest:
    id: int
    # Also the state digest: O(keys) to compute, so only for those who ask (tests
    # comparing replicas), never for every status poll.
    state: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequest:
    id: int
    target: int | None  # None: the most up-to-date connected voter


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRequest:
    id: int
    op: str  # list | add | remove
    node: int = 0  # add and remove: the node, >= 1
    addresses: tuple[Address, Address] | None = None  # add: (peer, client)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkFaultsRequest:
    """Replace this node's injected link faults (raftproc.runtime.linkfaults)."""

    id: int
    faults: LinkFaults


@dataclass(slots=True, kw_only=True, init=False)
class KvRequest:
    # Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per
    # field, which cost about a microsecond per write on the leader's hot path. The
    # __init__ is written by hand: under mypyc a generated one stays interpreted.
    id: int
    op: str  # set | get | del | cas | scan | register (a new client asks for its id)
    key: str
    value: str | bytes | None
    expect: str | bytes | None  # cas: the value expected, None for an absent key
    client: int
    seq: int
    read: str  # get: log | index | lease; scan: index | lease; "log" for every write
    retry: bool  # an earlier attempt of this request may have reached a log
    trace: bool  # every node logs this write's way (`supervisor.py timeline`)
    after: str | None  # scan: the page starts after this key
    limit: int  # scan: at most this many keys in the page

    def __init__(
        self,
        *,
        id: int,
        op: str,
        key: str,
        value: str | bytes | None,
        expect: str | bytes | None,
        client: int,
        seq: int,
        read: str,
        retry: bool = False,
        trace: bool = False,
        after: str | None = None,
        limit: int = 0,
    ) -> None:
        self.id = id
        self.op = op
        self.key = key
        self.value = value
        self.expect = expect
        self.client = client
        self.seq = seq
        self.read = read
        self.retry = retry
        self.trace = trace
        self.after = after
        self.limit = limit

    @property
    def through_log(self) -> bool:
        return self.read == "log"


@dataclass(slots=True, kw_only=True)
class RedisRequest:
    """Redis commands a node's RESP port took (raftproc.server.redis), for the leader
    to run: one command, or a MULTI block's (`multi`), each a list of byte strings.
    The leader decides from the command table what is a read; nobody's say-so does."""

    id: int
    commands: list[list[bytes]]
    multi: bool = False


ClientRequest = StatusRequest | TransferRequest | MemberRequest | KvRequest | LinkFaultsRequest | RedisRequest


class Outcome(StrEnum):
    """The `status` of an answer."""

    OK = "ok"  # done: `result` says what it returned
    REDIRECT = "redirect"  # not the leader: `leader` at `leader_addr` is
    NO_LEADER = "no_leader"  # this node knows no leader: ask another
    FAILED = "failed"  # certainly not applied (a newer leader overwrote it); a retry may be
    ERROR = "error"  # refused: not applied, and asking again will not help
    UNKNOWN = "unknown"  # may have been applied: retry with the same sequence number
    SESSION_EXPIRED = "session_expired"  # the cluster forgot this client's session
    DISK_FULL = "disk_full"  # this node cannot write its log: ask another


_OUTCOMES = {o.value: o for o in Outcome}  # a dict lookup: Outcome(text) costs a microsecond


@dataclass(slots=True, kw_only=True)
class Answer:
    # Not frozen, like KvRequest: a load generator decodes one per request.
    id: int
    status: Outcome
    result: Any = None  # ok: the operation's result
    error: str | None = None  # why, for every status but ok and redirect
    leader: int | None = None  # redirect: who leads
    leader_addr: str | None = None  # redirect: its client address, HOST:PORT


def encode_answer(request_id: int, status: Outcome, **fields: Any) -> bytes:
    """An answer as the server sends it (`codec.encode_ok_answer` is the fast way to
    say a plain ok)."""
    return encode({"t": "resp", "id": request_id, "status": status.value, **fields})


def decode_answer(data: bytes) -> Answer:
    body = codec.decode_answer(data)
    status = body.get("status")
    outcome = _OUTCOMES.get(status) if isinstance(status, str) else None
    if outcome is None:
        raise RemoteProtocolError(f"unknown answer status {str(status)[:40]!r}")
    if outcome is Outcome.OK:  # most answers: nothing else to check
        return Answer(id=body["id"], status=outcome, result=body.get("result"))
    error, leader, leader_addr = body.get("error"), body.get("leader"), body.get("leader_addr")
    return Answer(
        id=body["id"],
        status=outcome,
        result=body.get("result"),
        error=error if isinstance(error, str) else None,
        leader=leader if is_count(leader) else None,
        leader_addr=leader_addr if isinstance(leader_addr, str) else None,
    )


def encode_request(req: ClientRequest) -> bytes:
    """The frame body `decode_request` turns back into `req`."""
    return encode(request_body(req))


def request_body(req: ClientRequest) -> dict[str, Any]:
    """`req` as the map on the wire (fuzzers start from these, then break them)."""
    if isinstance(req, KvRequest):
        return _kv_body(req)
    if isinstance(req, StatusRequest):
        return {"t": "status", "id": req.id, **({"state": True} if req.state else {})}
    if isinstance(req, TransferRequest):
        return {"t": "transfer", "id": req.id, "target": req.target}
    if isinstance(req, LinkFaultsRequest):
        return {"t": "links", "id": req.id, **req.faults.to_wire()}
    if isinstance(req, RedisRequest):
        return {"t": "redis", "id": req.id, "commands": req.commands, **({"multi": True} if req.multi else {})}
    body: dict[str, Any] = {"t": "member", "id": req.id, "op": req.op}
    if req.op != "list":
        body["node"] = req.node
    if req.addresses is not None:
        body["addresses"] = [f"{host}:{port}" for host, port in req.addresses]
    return body


def _kv_body(req: KvRequest) -> dict[str, Any]:
    body = {
        "t": "req",
        "id": req.id,
        "op": req.op,
        "key": req.key,
        "value": req.value,
        "expect": req.expect,
        "client": req.client,
        "seq": req.seq,
    }
    if req.op in ("get", "scan"):
        body["read"] = req.read
    if req.op == "scan":
        body["after"], body["limit"] = req.after, req.limit
    if req.retry:
        body["retry"] = True
    if req.trace:
        body["trace"] = True
    return body


def decode_request(data: bytes) -> ClientRequest:
    if COMPILED:
        plain = _plain_write(data)
        if plain is not None:
            return plain
    return _decode_any(data)


def _decode_any(data: bytes) -> ClientRequest:
    body = load_map(data)
    request_id = body.get("id")
    if not is_count(request_id):
        raise RemoteProtocolError("request without a numeric id")
    t = body.get("t")
    if t == "status":
        state = body.get("state", False)
        if not isinstance(state, bool):
            raise RemoteProtocolError("status state must be true or false")
        return StatusRequest(id=request_id, state=state)
    if t == "transfer":
        target = body.get("target")
        if not (target is None or is_count(target)):
            raise RemoteProtocolError("transfer target must be a node id or null (the most up-to-date follower)")
        return TransferRequest(id=request_id, target=target)
    if t == "member":
        return _member_request(request_id, body)
    if t == "req":
        return _kv_request(request_id, body)
    if t == "redis":
        return _redis_request(request_id, body)
    if t == "links":
        try:
            return LinkFaultsRequest(id=request_id, faults=parse_link_faults(body))
        except LinkFaultsError as e:
            raise RemoteProtocolError(str(e)) from None
    raise RemoteProtocolError("unknown request type")


def _kv_request(request_id: int, body: dict[str, Any]) -> KvRequest:
    op = body.get("op")
    if not isinstance(op, str) or op not in KV_OPS:
        raise RemoteProtocolError("unknown operation")
    client, seq = body.get("client"), body.get("seq")
    if not is_count(client) or not is_count(seq):
        raise RemoteProtocolError("request without client id and sequence number")
    if op == "register" and client != 0:
        raise RemoteProtocolError("register asks for a client id: it must not carry one (client 0)")
    key = body.get("key")
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
        raise RemoteProtocolError(f"key must be a string of at most {MAX_KEY_CHARS} characters")
    value, expect = body.get("value"), body.get("expect")
    if op in ("set", "cas") and not isinstance(value, (str, bytes)):
        raise RemoteProtocolError(f"{op} needs a string or bytes value")
    if op == "cas" and not (expect is None or isinstance(expect, (str, bytes))):
        raise RemoteProtocolError("cas expect must be a string, bytes or null (absent)")
    read = body.get("read", "index" if op == "scan" else "log")
    if not isinstance(read, str) or read not in READ_MODES or ("read" in body and op not in ("get", "scan")):
        raise RemoteProtocolError("read must be log, index or lease, and only on get or scan")
    after, limit = body.get("after"), body.get("limit", 1000)
    if op == "scan":
        if read == "log" or not (after is None or (isinstance(after, str) and len(after) <= MAX_KEY_CHARS)):
            raise RemoteProtocolError("scan reads with index or lease, and after is a key or null")
        if not is_count(limit) or not 1 <= limit <= MAX_SCAN_LIMIT:
            raise RemoteProtocolError(f"scan limit must be 1 to {MAX_SCAN_LIMIT}")
    retry, trace = body.get("retry", False), body.get("trace", False)
    if not isinstance(retry, bool) or not isinstance(trace, bool):
        raise RemoteProtocolError("retry and trace must be true or false")
    return KvRequest(
        id=request_id,
        op=op,
        key=key,
        value=value if op in ("set", "cas") else None,
        expect=expect if op == "cas" else None,
        client=client,
        seq=seq,
        read=read,
        retry=retry,
        trace=trace,
        after=after if op == "scan" else None,
        limit=limit if op == "scan" else 0,
    )


# The keys and texts of a plain write, as cbor.Reader.short_text reads them.
_V: Final = short_text_code("v")
_T: Final = short_text_code("t")
_ID: Final = short_text_code("id")
_OP: Final = short_text_code("op")
_KEY: Final = short_text_code("key")
_VALUE: Final = short_text_code("value")
_EXPECT: Final = short_text_code("expect")
_CLIENT: Final = short_text_code("client")
_SEQ: Final = short_text_code("seq")
_READ: Final = short_text_code("read")
_REQ: Final = short_text_code("req")
_READ_MODES: Final = {short_text_code(mode): mode for mode in READ_MODES}
_WRITE_OPS: Final = {short_text_code(op): op for op in ("set", "del", "cas", "get")}


def _plain_write(data: bytes) -> KvRequest | None:
    """decode_request of the request nearly every client sends, read straight into a
    KvRequest (compiled, a third of the cost of a map through cbor2 and then the
    checks): set, cas, del or get, a first attempt, untraced, with no key but these.
    None for anything else, or anything wrong: the general way then reads it, and
    refuses it with its reason. So this accepts only what that way accepts, and
    gives what it gives (tests/unit/test_cbor.py holds it to that)."""
    r = cbor.Reader(data)
    version = tag = request_id = op = client = seq = read = -1
    key: str | None = None
    value: str | bytes | None = None
    expect: str | bytes | None = None
    try:
        for _ in range(r.count(cbor.MAP)):
            name = r.short_text()
            if name == _V:
                version = r.uint()
            elif name == _T:
                tag = r.short_text()
            elif name == _ID:
                request_id = r.uint()
            elif name == _OP:
                op = r.short_text()
            elif name == _KEY:
                key = r.text()
            elif name == _VALUE:
                value = r.text_bytes_or_null()
            elif name == _EXPECT:
                expect = r.text_bytes_or_null()
            elif name == _CLIENT:
                client = r.uint()
            elif name == _SEQ:
                seq = r.uint()
            elif name == _READ:
                read = r.short_text()
            else:
                return None
    except Unhandled:
        return None
    if not (r.pos == len(data) and version == codec.PROTOCOL_VERSION and tag == _REQ and min(request_id, client, seq) >= 0):
        return None
    name_of_op = _WRITE_OPS.get(op)
    if read == -1:
        read_mode: str | None = "log"
    else:  # only a get says how it reads
        read_mode = _READ_MODES.get(read) if name_of_op == "get" else None
    writes = name_of_op == "set" or name_of_op == "cas"
    if name_of_op is None or read_mode is None or key is None or len(key) > MAX_KEY_CHARS or (writes and value is None):
        return None
    value, expect = (value if writes else None), (expect if name_of_op == "cas" else None)
    return KvRequest(id=request_id, op=name_of_op, key=key, value=value, expect=expect, client=client, seq=seq, read=read_mode)


def _redis_request(request_id: int, body: dict[str, Any]) -> RedisRequest:
    commands, multi = body.get("commands"), body.get("multi", False)
    if not isinstance(multi, bool):
        raise RemoteProtocolError("redis multi must be true or false")
    if not isinstance(commands, list) or not 1 <= len(commands) <= (MAX_REDIS_COMMANDS if multi else 1):
        raise RemoteProtocolError(f"redis commands must be a list of 1 (or, for a MULTI block, up to {MAX_REDIS_COMMANDS}) commands")
    for argv in commands:
        if not isinstance(argv, list) or not argv or not all(isinstance(a, bytes) for a in argv):
            raise RemoteProtocolError("a redis command is a non-empty list of byte strings")
    return RedisRequest(id=request_id, commands=commands, multi=multi)


def _member_request(request_id: int, body: dict[str, Any]) -> MemberRequest:
    op = body.get("op")
    if not isinstance(op, str) or op not in MEMBER_OPS:
        raise RemoteProtocolError("member op must be list, add or remove")
    if op == "list":
        return MemberRequest(id=request_id, op=op)
    node = body.get("node")
    if not is_count(node) or node < 1:
        raise RemoteProtocolError(f"member {op} needs a positive node id")
    if op == "remove":
        return MemberRequest(id=request_id, op=op, node=node)
    addresses = body.get("addresses")
    if not isinstance(addresses, list) or len(addresses) != 2 or not all(isinstance(a, str) for a in addresses):
        raise RemoteProtocolError("member add needs the node's peer and client addresses, HOST:PORT each")
    try:
        peer, client = (parse_address(a) for a in addresses)
    except ValueError as e:
        raise RemoteProtocolError(str(e)) from None
    return MemberRequest(id=request_id, op=op, node=node, addresses=(peer, client))
