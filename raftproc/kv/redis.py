"""Redis's data commands over the key-value store: checked, then applied the same
way on every replica.

`check(argv)` is what a Redis server answers before it runs a command: unknown
command, wrong number of arguments, syntax error. A command that passes is either a
read (served after ReadIndex on the leader) or a write (one log entry). A MULTI
block is one log entry too: `execute_all` runs its commands in order on the same
state, so every replica applies the whole block at one index, and nothing else
runs between its commands.

Everything here is deterministic: no clock, no randomness, no dict order that
differs between processes (SCAN walks keys in the order of a fixed hash of the key,
not Python's salted hash()). Replies are the forms raftproc.runtime.resp encodes:
None, int, str or bytes, lists, {"status": text} and {"error": text}.

What differs from Redis (docs/redis.md has the table):
- keys are UTF-8 text of at most MAX_KEY_CHARS characters; values are any bytes;
- keys never expire, so EX/PX/EXAT/PXAT/KEEPTTL, SETEX and EXPIRE are refused with
  an error naming them (TTL answers -1: no expiry, or -2: no key);
- KEYS and SCAN MATCH take a prefix (`user:*`) or a whole key, not every glob;
  KEYS answers at most MAX_KEYS_REPLY keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Reply = Any


class KeyValueStore(Protocol):
    """What these commands need of raftproc.kv.state_machine.KeyValueStore (which
    imports this module, so it is named here by what it does)."""

    data: dict[str, str | bytes]

    def put(self, key: str, value: str | bytes) -> None: ...

    def delete(self, key: str) -> bool: ...

    def keys_with_prefix(self, prefix: str, limit: int) -> list[str]: ...

    def scan_hashed(self, cursor: int, count: int) -> tuple[list[str], int]: ...


MAX_KEY_CHARS = 4096
MAX_KEYS_REPLY = 100_000
MAX_SCAN_COUNT = 10_000
# A reply's keys and values, at most (text counted at 4 bytes a character unless
# ASCII): under the smallest max_frame a forwarded answer must fit in, and small
# enough that no request can make a node build a reply of gigabytes (MGET of
# thousands of large values, EXEC of many GETs). Deterministic: every replica
# refuses the same replies.
MAX_REPLY_BYTES = 4 * 1024 * 1024
# The longest value APPEND makes (a SET's value is bounded by max_request_bytes): a
# GET of it must fit in a forwarded answer, and a value must not grow without end.
MAX_VALUE_BYTES = MAX_REPLY_BYTES
ARG_OVERHEAD = 16  # bytes an argument counts beyond its own: a million empty ones are not free
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
READ, WRITE = "read", "write"


def status(text: str) -> dict[str, str]:
    return {"status": text}


def error(text: str) -> dict[str, str]:
    return {"error": text}


def is_error(reply: Reply) -> bool:
    return type(reply) is dict and "error" in reply


OK = status("OK")
NOT_INTEGER = error("ERR value is not an integer or out of range")
OVERFLOW = error("ERR increment or decrement would overflow")
SYNTAX = error("ERR syntax error")
TOO_LARGE = error(f"ERR the reply would pass {MAX_REPLY_BYTES} bytes: ask for fewer keys at a time")


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # as COMMAND lists it: lower case
    arity: int  # Redis's convention: n exactly n words (the name included), -n at least n
    kind: str  # READ | WRITE
    run: Callable[[KeyValueStore, list[bytes]], Reply]
    first_key: int = 1  # COMMAND INFO's key positions; 0: no keys
    last_key: int = 1  # -1: to the end
    step: int = 1
    syntax: Callable[[list[bytes]], dict[str, str] | None] | None = None  # beyond arity: an error reply or None

    def keys(self, argv: list[bytes]) -> list[bytes]:
        if self.first_key == 0:
            return []
        last = len(argv) - 1 if self.last_key < 0 else self.last_key
        return argv[self.first_key : last + 1 : self.step]


# --- checking ---------------------------------------------------------------------


def check(argv: list[bytes]) -> Spec | dict[str, str]:
    """The command's Spec, or the error reply Redis would give instead of running it."""
    name = argv[0].lower()
    spec = COMMANDS.get(name)
    if spec is None:
        if name in NEVER_EXPIRE:
            return error(f"ERR raftproc keys do not expire: {name.decode().upper()} is not supported")
        return unknown_command(argv)
    if (spec.arity >= 0 and len(argv) != spec.arity) or len(argv) < -spec.arity:
        return error(f"ERR wrong number of arguments for '{spec.name}' command")
    for key in spec.keys(argv):
        bad = _bad_key(key)
        if bad is not None:
            return bad
    bad = spec.syntax(argv) if spec.syntax is not None else None
    return spec if bad is None else bad


def unknown_command(argv: list[bytes]) -> dict[str, str]:
    """Redis's words, with the name and first arguments cut short: they are the client's."""
    shown = " ".join(f"'{_shown(a)}'" for a in argv[1:4])
    return error(f"ERR unknown command '{_shown(argv[0])}', with args beginning with: {shown}")


def _shown(arg: bytes, width: int = 40) -> str:
    return arg[:width].decode(errors="replace").replace("'", "")


def _bad_key(key: bytes) -> dict[str, str] | None:
    if len(key) > 4 * MAX_KEY_CHARS:
        return error(f"ERR raftproc keys are at most {MAX_KEY_CHARS} characters")
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return error("ERR raftproc keys are UTF-8 text")
    return error(f"ERR raftproc keys are at most {MAX_KEY_CHARS} characters") if len(text) > MAX_KEY_CHARS else None


def _key(arg: bytes) -> str:
    return arg.decode()


def _value(arg: bytes) -> str | bytes:
    """As the store keeps values: text when it is UTF-8, else the bytes."""
    try:
        return arg.decode()
    except UnicodeDecodeError:
        return arg


def _raw(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


# --- running ----------------------------------------------------------------------


def execute(store: KeyValueStore, argv: list[bytes]) -> Reply:
    """One checked command on `store`. A command that fails the check (a log entry
    nobody checked, e.g. from a newer version) answers its error and changes nothing."""
    spec = check(argv)
    if not isinstance(spec, Spec):
        return spec
    return spec.run(store, argv)


def execute_all(store: KeyValueStore, commands: list[list[bytes]]) -> list[Reply]:
    """A MULTI block: every command runs; values and lists past MAX_REPLY_BYTES in
    all are replaced by an error saying so."""
    replies, size = [], 0
    for argv in commands:
        reply = execute(store, argv)
        size += reply_size(reply)
        # A write's reply is never dropped: it says what was done.
        spec = COMMANDS.get(argv[0].lower())
        replies.append(TOO_LARGE if size > MAX_REPLY_BYTES and spec is not None and spec.kind == READ else reply)
    return replies


def request_size(commands: list[list[bytes]]) -> int:
    """What commands count against max_request_bytes: their bytes and ARG_OVERHEAD each."""
    return sum(len(a) + ARG_OVERHEAD for argv in commands for a in argv)


def reply_size(reply: Reply) -> int:
    if isinstance(reply, bytes):
        return len(reply)
    if isinstance(reply, str):
        return len(reply) if reply.isascii() else 4 * len(reply)
    if isinstance(reply, list):
        return sum(reply_size(r) for r in reply)
    return 8


def _bounded(reply: list[Any]) -> Reply:
    return reply if reply_size(reply) <= MAX_REPLY_BYTES else TOO_LARGE


def _get(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return store.data.get(_key(argv[1]))


def _mget(store: KeyValueStore, argv: list[bytes]) -> Reply:
    data = store.data
    return _bounded([data.get(_key(k)) for k in argv[1:]])


def _exists(store: KeyValueStore, argv: list[bytes]) -> Reply:
    data = store.data
    return sum(1 for k in argv[1:] if _key(k) in data)


def _strlen(store: KeyValueStore, argv: list[bytes]) -> Reply:
    value = store.data.get(_key(argv[1]))
    return 0 if value is None else len(_raw(value))


def _ttl(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return -1 if _key(argv[1]) in store.data else -2


def _type(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return status("string" if _key(argv[1]) in store.data else "none")


def _dbsize(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return len(store.data)


def _ping(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return argv[1] if len(argv) > 1 else status("PONG")


def _echo(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return argv[1]


def _set_options(argv: list[bytes]) -> tuple[bool, bool, bool] | dict[str, str]:
    """SET's NX, XX and GET flags, or the error its options earn."""
    nx = xx = get = False
    for word in (a.upper() for a in argv[3:]):
        if word == b"NX" and not xx:
            nx = True
        elif word == b"XX" and not nx:
            xx = True
        elif word == b"GET":
            get = True
        elif word in (b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL"):
            return error(f"ERR raftproc keys do not expire: SET with {word.decode()} is not supported")
        else:
            return SYNTAX
    return nx, xx, get


def _check_set(argv: list[bytes]) -> dict[str, str] | None:
    options = _set_options(argv)
    return options if isinstance(options, dict) else None


def _set(store: KeyValueStore, argv: list[bytes]) -> Reply:
    options = _set_options(argv)
    if isinstance(options, dict):
        return options
    nx, xx, get = options
    key = _key(argv[1])
    old = store.data.get(key)
    if (nx and old is not None) or (xx and old is None):
        return old if get else None
    store.put(key, _value(argv[2]))
    return old if get else OK


def _setnx(store: KeyValueStore, argv: list[bytes]) -> Reply:
    key = _key(argv[1])
    if key in store.data:
        return 0
    store.put(key, _value(argv[2]))
    return 1


def _getset(store: KeyValueStore, argv: list[bytes]) -> Reply:
    key = _key(argv[1])
    old = store.data.get(key)
    store.put(key, _value(argv[2]))
    return old


def _check_pairs(argv: list[bytes]) -> dict[str, str] | None:
    return None if len(argv) % 2 == 1 else error(f"ERR wrong number of arguments for '{argv[0].lower().decode()}' command")


def _mset(store: KeyValueStore, argv: list[bytes]) -> Reply:
    for i in range(1, len(argv), 2):
        store.put(_key(argv[i]), _value(argv[i + 1]))
    return OK


def _msetnx(store: KeyValueStore, argv: list[bytes]) -> Reply:
    if any(_key(argv[i]) in store.data for i in range(1, len(argv), 2)):
        return 0
    _mset(store, argv)
    return 1


def _del(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return sum(1 for k in argv[1:] if store.delete(_key(k)))


def parse_int64(arg: bytes) -> int | None:
    """Redis's string2ll: an optional minus, digits without a leading zero, in 64 bits."""
    body = arg[1:] if arg[:1] == b"-" else arg
    if not (0 < len(body) <= 19 and body.isdigit()) or (body[:1] == b"0" and (len(body) > 1 or arg[:1] == b"-")):
        return None
    n = int(arg)
    return n if INT64_MIN <= n <= INT64_MAX else None


def _check_increment(argv: list[bytes]) -> dict[str, str] | None:
    return None if parse_int64(argv[2]) is not None else NOT_INTEGER


def _add(store: KeyValueStore, key_arg: bytes, delta: int) -> Reply:
    key = _key(key_arg)
    current = store.data.get(key)
    if current is None:
        n: int | None = 0
    else:
        n = parse_int64(_raw(current))
    if n is None:
        return NOT_INTEGER
    total = n + delta
    if not INT64_MIN <= total <= INT64_MAX:
        return OVERFLOW
    store.put(key, str(total))
    return total


def _incr(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return _add(store, argv[1], 1)


def _decr(store: KeyValueStore, argv: list[bytes]) -> Reply:
    return _add(store, argv[1], -1)


def _incrby(store: KeyValueStore, argv: list[bytes]) -> Reply:
    delta = parse_int64(argv[2])
    return NOT_INTEGER if delta is None else _add(store, argv[1], delta)


def _decrby(store: KeyValueStore, argv: list[bytes]) -> Reply:
    delta = parse_int64(argv[2])
    if delta is None or delta == INT64_MIN:  # Redis: its negation does not fit
        return error("ERR decrement would overflow") if delta == INT64_MIN else NOT_INTEGER
    return _add(store, argv[1], -delta)


def _append(store: KeyValueStore, argv: list[bytes]) -> Reply:
    key = _key(argv[1])
    current = store.data.get(key)
    joined = (b"" if current is None else _raw(current)) + argv[2]
    if len(joined) > MAX_VALUE_BYTES:
        return error(f"ERR string exceeds maximum allowed size ({MAX_VALUE_BYTES} bytes)")
    store.put(key, _value(joined))
    return len(joined)


# --- KEYS and SCAN ------------------------------------------------------------------


def _prefix(pattern: bytes) -> tuple[str, bool] | None:
    """A pattern this store can match: (prefix, whole key?), or None."""
    try:
        text = pattern.decode()
    except UnicodeDecodeError:
        return None
    body, star = (text[:-1], True) if text.endswith("*") else (text, False)
    if any(c in body for c in "*?[]\\"):
        return None
    return body, not star


def _unmatchable(pattern: bytes) -> dict[str, str]:
    return error(f"ERR raftproc matches a prefix (abc*) or a whole key, not the pattern '{_shown(pattern)}'")


def _check_keys(argv: list[bytes]) -> dict[str, str] | None:
    return None if _prefix(argv[1]) is not None else _unmatchable(argv[1])


def _keys(store: KeyValueStore, argv: list[bytes]) -> Reply:
    matched = _prefix(argv[1])
    if matched is None:
        return _unmatchable(argv[1])
    prefix, whole = matched
    if whole:
        return [prefix] if prefix in store.data else []
    found = store.keys_with_prefix(prefix, MAX_KEYS_REPLY + 1)
    if len(found) > MAX_KEYS_REPLY:
        return error(f"ERR KEYS matched more than {MAX_KEYS_REPLY} keys: use SCAN, which pages")
    return _bounded(found)


@dataclass(frozen=True, slots=True)
class ScanArgs:
    cursor: int
    count: int
    prefix: str
    whole: bool  # MATCH names a whole key
    nothing: bool  # TYPE asks for another type than string: no key matches


def _scan_args(argv: list[bytes]) -> ScanArgs | dict[str, str]:
    cursor = argv[1]
    if not (0 < len(cursor) <= 20 and cursor.isdigit()) or int(cursor) >= 2**64:
        return error("ERR invalid cursor")
    count, prefix, whole, nothing = 10, "", False, False
    options = argv[2:]
    if len(options) % 2:
        return SYNTAX
    for word, arg in zip(options[::2], options[1::2], strict=True):
        word = word.upper()
        if word == b"COUNT":
            n = parse_int64(arg)
            if n is None:
                return NOT_INTEGER
            if n < 1:
                return SYNTAX
            count = min(n, MAX_SCAN_COUNT)
        elif word == b"MATCH":
            matched = _prefix(arg)
            if matched is None:
                return _unmatchable(arg)
            prefix, whole = matched
        elif word == b"TYPE":
            nothing = arg.lower() != b"string"
        else:
            return SYNTAX
    return ScanArgs(int(cursor), count, prefix, whole, nothing)


def _check_scan(argv: list[bytes]) -> dict[str, str] | None:
    args = _scan_args(argv)
    return args if isinstance(args, dict) else None


def _scan(store: KeyValueStore, argv: list[bytes]) -> Reply:
    """Like Redis's SCAN: COUNT is the work per call, MATCH filters what it found, a
    key present from the first call to the last is returned at least once (the
    cursor is a position in a fixed hash order, which keys added or removed between
    calls do not shift)."""
    args = _scan_args(argv)
    if isinstance(args, dict):
        return args
    keys, next_cursor = store.scan_hashed(args.cursor, args.count)
    if args.nothing:
        keys = []
    elif args.whole:
        keys = [k for k in keys if k == args.prefix]
    elif args.prefix:
        keys = [k for k in keys if k.startswith(args.prefix)]
    return [str(next_cursor), _bounded(keys)]


def key_hash(key: str) -> int:
    """The SCAN order: 64 bits of BLAKE2b, the same in every process (hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


# --- the table --------------------------------------------------------------------

_SPECS = [
    Spec("get", 2, READ, _get),
    Spec("mget", -2, READ, _mget, 1, -1),
    Spec("exists", -2, READ, _exists, 1, -1),
    Spec("strlen", 2, READ, _strlen),
    Spec("ttl", 2, READ, _ttl),
    Spec("pttl", 2, READ, _ttl),
    Spec("type", 2, READ, _type),
    Spec("dbsize", 1, READ, _dbsize, 0, 0, 0),
    Spec("keys", 2, READ, _keys, 0, 0, 0, syntax=_check_keys),
    Spec("scan", -2, READ, _scan, 0, 0, 0, syntax=_check_scan),
    Spec("ping", -1, READ, _ping, 0, 0, 0),
    Spec("echo", 2, READ, _echo, 0, 0, 0),
    Spec("set", -3, WRITE, _set, syntax=_check_set),
    Spec("setnx", 3, WRITE, _setnx),
    Spec("getset", 3, WRITE, _getset),
    Spec("mset", -3, WRITE, _mset, 1, -1, 2, syntax=_check_pairs),
    Spec("msetnx", -3, WRITE, _msetnx, 1, -1, 2, syntax=_check_pairs),
    Spec("del", -2, WRITE, _del, 1, -1),
    Spec("unlink", -2, WRITE, _del, 1, -1),
    Spec("incr", 2, WRITE, _incr),
    Spec("decr", 2, WRITE, _decr),
    Spec("incrby", 3, WRITE, _incrby, syntax=_check_increment),
    Spec("decrby", 3, WRITE, _decrby, syntax=_check_increment),
    Spec("append", 3, WRITE, _append),
]
COMMANDS: dict[bytes, Spec] = {s.name.encode(): s for s in _SPECS}
NEVER_EXPIRE = {
    name.encode() for name in ("expire", "pexpire", "expireat", "pexpireat", "persist", "setex", "psetex", "getex", "expiretime")
}
