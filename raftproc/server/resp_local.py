"""A RESP connection's state (RespSession), and the commands a node answers
itself: the connection's own business (HELLO, CLIENT, SELECT, MULTI, ...) and what
clients ask about the server (INFO, COMMAND, CONFIG GET). None of them touches
the log, so none waits.

Each handler takes (context, argv) and returns the reply, in the forms
raftproc.runtime.resp encodes.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftproc import __version__
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER
from raftproc.kv import redis
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime.addresses import Address
from raftproc.runtime.loop import Connection
from raftproc.runtime.resp import Map, RespError
from raftproc.server.peers import Peers

REDIS_VERSION = "7.0.0"  # the Redis whose string commands these follow, for clients that ask
MAX_NAME_BYTES = 256
STARTED = time.monotonic()


PENDING = object()  # a Slot's reply before the answer came


class Slot:
    """A place in a connection's answer order."""

    __slots__ = ("reply", "size")

    def __init__(self) -> None:
        self.reply: Any = PENDING
        self.size = 0  # bytes its reply holds while it waits behind an earlier one


class RespSession:
    """One client connection and what Redis keeps per connection."""

    def __init__(self, conn: Connection, client_id: int, now: float) -> None:
        self.conn = conn
        self.id = client_id
        self.name = b""
        self.resp3 = False
        self.created = now
        self.multi: list[list[bytes]] | None = None  # commands queued since MULTI
        self.multi_failed = False  # a queued command was refused: EXEC answers EXECABORT
        self.multi_bytes = 0  # what the queued commands count against max_request_bytes
        self.slots: deque[Slot] = deque()
        self.inbox: deque[list[bytes] | RespError] = deque()  # read, not yet started (the pipeline was full, or must wait)
        self.in_flight = 0  # commands sent to the leader, not yet answered
        self.in_flight_kind = ""  # what they are: reads or writes (raftproc.kv.redis.READ, WRITE)
        self.in_flight_to: int | None = None  # and the leader they went to
        self.held = 0  # bytes of answers waiting behind an earlier one
        self.taking = False  # inside _take: answers given meanwhile must not start another
        self.take_due = False  # a timer will take the commands waiting in the inbox
        self.quitting = False


@dataclass(slots=True)
class NodeFacts:
    """What the answers here read of the node."""

    me: int
    raft: RaftNode
    kv: KeyValueStore
    peers: Peers
    clock: Callable[[], float]
    sessions: dict[Connection, RespSession]
    max_clients: int
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class LocalContext:
    node: NodeFacts
    session: RespSession


Handler = Callable[[LocalContext, list[bytes]], Any]


def _arity(argv: list[bytes], low: int, high: int | None = None) -> dict[str, str] | None:
    if low <= len(argv) <= (high if high is not None else low):
        return None
    return redis.error(f"ERR wrong number of arguments for '{argv[0].lower().decode(errors='replace')[:20]}' command")


def _ping(ctx: LocalContext, argv: list[bytes]) -> Any:
    return _arity(argv, 1, 2) or (argv[1] if len(argv) == 2 else redis.status("PONG"))


def _echo(ctx: LocalContext, argv: list[bytes]) -> Any:
    return _arity(argv, 2) or argv[1]


def _quit(ctx: LocalContext, argv: list[bytes]) -> Any:
    ctx.session.quitting = True
    return redis.OK


def _select(ctx: LocalContext, argv: list[bytes]) -> Any:
    bad = _arity(argv, 2)
    if bad:
        return bad
    db = redis.parse_int64(argv[1])
    if db is None:
        return redis.NOT_INTEGER
    return redis.OK if db == 0 else redis.error("ERR DB index is out of range")


def _auth(ctx: LocalContext, argv: list[bytes]) -> Any:
    return _arity(argv, 2, 3) or redis.error(
        "ERR AUTH <password> called without any password configured for the default user: raftproc authenticates clients by TLS certificate"
    )


def _hello(ctx: LocalContext, argv: list[bytes]) -> Any:
    session = ctx.session
    if len(argv) > 1:
        if not argv[1].isdigit() or len(argv[1]) > 10:
            return redis.error("ERR Protocol version is not an integer or out of range")
        if int(argv[1]) not in (2, 3):
            return redis.error("NOPROTO unsupported protocol version")
    name, i = None, 2
    while i < len(argv):
        option = argv[i].upper()
        if option == b"AUTH" and i + 2 < len(argv):
            i += 3  # no passwords: like a Redis without one, any is taken (TLS certificates authenticate)
        elif option == b"SETNAME" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
        else:
            return redis.error(f"ERR Syntax error in HELLO option '{argv[i][:20].decode(errors='replace')}'")
    if name is not None:
        bad = _bad_name(name)
        if bad:
            return bad
        session.name = name
    if len(argv) > 1:
        session.resp3 = int(argv[1]) == 3
    return Map(
        server="redis",
        version=REDIS_VERSION,
        proto=3 if session.resp3 else 2,
        id=session.id,
        mode="standalone",
        role="master" if ctx.node.raft.role == LEADER else "replica",
        modules=[],
    )


def _bad_name(name: bytes) -> dict[str, str] | None:
    if len(name) > MAX_NAME_BYTES:
        return redis.error(f"ERR client names are at most {MAX_NAME_BYTES} bytes")
    if any(b <= 32 or b >= 127 for b in name):
        return redis.error("ERR Client names cannot contain spaces, newlines or special characters.")
    return None


def _client(ctx: LocalContext, argv: list[bytes]) -> Any:
    if len(argv) < 2:
        return _arity(argv, 2)
    sub, session = argv[1].lower(), ctx.session
    if sub == b"id":
        return _arity(argv, 2) or session.id
    if sub == b"getname":
        return _arity(argv, 2) or (session.name or None)
    if sub == b"setname":
        bad = _arity(argv, 3) or _bad_name(argv[2])
        if not bad:
            session.name = argv[2]
        return bad or redis.OK
    if sub == b"setinfo":
        if _arity(argv, 4) or argv[2].lower() not in (b"lib-name", b"lib-ver"):
            return redis.error("ERR Unrecognized option or wrong number of arguments for CLIENT SETINFO")
        return redis.OK
    if sub == b"info":
        return _client_line(ctx.node, session)
    if sub == b"list":
        return "".join(_client_line(ctx.node, s) for s in ctx.node.sessions.values())
    return redis.error(f"ERR unknown subcommand '{argv[1][:20].decode(errors='replace')}'. Try CLIENT HELP.")


def _client_line(node: NodeFacts, s: RespSession) -> str:
    age = int(node.clock() - s.created)
    return f"id={s.id} addr={s.conn.name.removeprefix('redis-')} name={s.name.decode()} age={age} db=0 resp={3 if s.resp3 else 2}\n"


def _command_info(name: str) -> list[Any]:
    """COMMAND INFO's classic six fields, then empty ACL categories, tips, key specs and subcommands."""
    spec = redis.COMMANDS.get(name.encode())
    if spec is None:
        arity = LOCAL_ARITY.get(name, -1)
        return [name, arity, [redis.status("fast")], 0, 0, 0, [], [], [], []]
    flags = [redis.status("write" if spec.kind == redis.WRITE else "readonly")]
    return [name, spec.arity, flags, spec.first_key, spec.last_key, spec.step, [], [], [], []]


def _all_names() -> list[str]:
    return [*(s.name for s in redis.COMMANDS.values()), *(n for n in LOCAL_ARITY if n.encode() not in redis.COMMANDS)]


def _command(ctx: LocalContext, argv: list[bytes]) -> Any:
    if len(argv) == 1:
        return [_command_info(n) for n in _all_names()]
    sub = argv[1].lower()
    if sub == b"count":
        return len(_all_names())
    if sub == b"list":
        return _all_names()
    if sub == b"docs":
        return Map()  # no docs: redis-cli then uses the hints it carries itself
    if sub == b"info":
        names = {*_all_names()}
        return [_command_info(n.lower().decode()) if n.lower().decode(errors="replace") in names else None for n in argv[2:]]
    return redis.error(f"ERR unknown subcommand '{argv[1][:20].decode(errors='replace')}'. Try COMMAND HELP.")


def _config(ctx: LocalContext, argv: list[bytes]) -> Any:
    if len(argv) < 2:
        return _arity(argv, 2)
    if argv[1].lower() != b"get":
        return redis.error("ERR raftproc's settings live in its config file: only CONFIG GET is supported")
    if len(argv) < 3:
        return _arity(argv, 3)
    settings = {
        "save": "",
        "appendonly": "yes",
        "appendfsync": "always",
        "databases": "1",
        "maxclients": str(ctx.node.max_clients),
    }
    found = Map()
    for pattern in argv[2:]:
        text = pattern[:64].decode(errors="replace").lower()
        found.update({k: v for k, v in settings.items() if fnmatch.fnmatchcase(k, text)})
    return found


def _info(ctx: LocalContext, argv: list[bytes]) -> Any:
    wanted = {a.lower().decode(errors="replace") for a in argv[1:]} - {"all", "everything", "default"}
    sections = _info_sections(ctx.node)
    return "".join(f"# {title}\r\n{body}\r\n" for title, body in sections if not wanted or title.lower() in wanted)


def _info_sections(service: NodeFacts) -> list[tuple[str, str]]:
    raft, kv = service.raft, service.kv
    leader = raft.leader_id
    entry = service.peers.book.get(leader) if leader is not None else None
    address = entry.redis if entry is not None else None
    port = service.address[1] if service.address else 0
    server = f"redis_version:{REDIS_VERSION}\r\nraftproc_version:{__version__}\r\nredis_mode:standalone\r\nprocess_id:{os.getpid()}\r\n"
    server += f"tcp_port:{port}\r\nuptime_in_seconds:{int(time.monotonic() - STARTED)}\r\nnode_id:{service.me}"
    replication = (
        f"role:{'master' if raft.role == LEADER else 'slave'}\r\nraft_role:{raft.role}\r\nraft_term:{raft.current_term}\r\n"
        f"raft_leader_id:{leader if leader is not None else ''}\r\n"
        f"raft_leader_redis:{f'{address[0]}:{address[1]}' if address else ''}\r\n"
        f"raft_commit_index:{raft.commit_index}\r\nraft_last_applied:{kv.last_applied}"
    )
    return [
        ("Server", server),
        ("Clients", f"connected_clients:{len(service.sessions)}\r\nmaxclients:{service.max_clients}"),
        ("Replication", replication),
        ("Keyspace", f"db0:keys={len(kv.data)},expires=0,avg_ttl=0" if kv.data else ""),
    ]


def _multi(ctx: LocalContext, argv: list[bytes]) -> Any:
    bad = _arity(argv, 1)
    if bad:
        return bad
    if ctx.session.multi is not None:
        return redis.error("ERR MULTI calls can not be nested")
    ctx.session.multi, ctx.session.multi_bytes = [], 0
    return redis.OK


def _discard(ctx: LocalContext, argv: list[bytes]) -> Any:
    if ctx.session.multi is None:
        return redis.error("ERR DISCARD without MULTI")
    ctx.session.multi, ctx.session.multi_failed = None, False
    return redis.OK


def _reset(ctx: LocalContext, argv: list[bytes]) -> Any:
    s = ctx.session
    s.multi, s.multi_failed, s.name, s.resp3 = None, False, b"", False
    return redis.status("RESET")


LOCAL_COMMANDS: dict[bytes, Handler] = {
    b"ping": _ping,
    b"echo": _echo,
    b"quit": _quit,
    b"select": _select,
    b"auth": _auth,
    b"hello": _hello,
    b"client": _client,
    b"command": _command,
    b"config": _config,
    b"info": _info,
    b"multi": _multi,
    b"discard": _discard,
    b"reset": _reset,
}
# COMMAND INFO's arity for the commands answered here (exec is the RESP room's own).
LOCAL_ARITY = {"ping": -1, "echo": 2, "quit": -1, "select": 2, "auth": -2, "hello": -1, "client": -2, "command": -1}
LOCAL_ARITY |= {"config": -2, "info": -1, "multi": 1, "exec": 1, "discard": 1, "reset": 1}
