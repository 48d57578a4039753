"""The key-value state machine every node applies the committed log to.

Contract (as hashicorp/raft writes on its FSM): apply must be deterministic and
give the same result on every node, for the same log. Nothing here reads the
clock, randomness or the disk.

Exactly-once: each client numbers its requests. The state machine keeps, per
client, the highest sequence number applied and its result. A retry of that
request (same client, same seq), which may reach the log twice when the first
answer was lost, is not applied again: it gets the first result back. The session
table is part of every snapshot, so this holds across compaction and restarts.

Sessions are bounded (the Raft dissertation, section 6.3): the table holds at most
MAX_SESSIONS clients, and applying a request for a new client evicts the one whose
last request was applied longest ago. The bound is a constant, not a setting, and
eviction depends only on the order of the log, so every replica forgets the same
sessions at the same index.

A client gets its id by registering, as in the dissertation: a `register` entry
opens a session whose id is REGISTERED + the entry's index, so the cluster knows
every id it ever issued. A request from a registered id with no session was
forgotten, and only then is it refused as "session expired"; nothing is applied.
A new client is never taken for a forgotten one: its first write retried across a
failover carries an id the log gave it (a register retried across a failover just
issues a second id; the unused one ages out like any idle session).

Ids at or below REGISTERED are chosen by the client itself (raw-protocol tools,
load generators). For those the store cannot tell new from forgotten, so it stays
on the safe side: an unknown id opens a session on a first attempt and a retry is
refused as "session expired" (it may have been applied before the session was
forgotten). The first attempt of a request always precedes its retries in the log:
an entry from an older term is committed only below the newer leader's entries.

Members' incarnations (raftproc.runtime.identity) are kept here too, learned
through the log: the leader proposes an `incarnation` entry for every member
whose incarnation it knows and the table lacks. The first entry for a node wins.
Applying a configuration that no longer lists a node drops it. Every node can
then refuse a wiped or replaced peer that it never met itself.

Which log a replica applied is the core's to say: its chain link at the applied
index (raftproc.core.log) is what status reports as `log_digest`. The store keeps no
second chain over the same entries (hashing every command again cost each node a
twentieth of its CPU per write).

The state digest is the sum (mod 2**128) of a hash of every key-value pair,
computed when asked: keeping it up to date hashed every value twice more on every
write, on every node (a third of the CPU of a 16 KiB write), to serve tests that
compare replicas. Only a status that asks for it (`state: true`) pays, O(keys).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cbor2
from sortedcontainers import SortedList

from raftproc.kv import redis
from raftproc.kv.commands import REGISTERED, Command

Result = dict[str, Any]
Value = str | bytes  # bytes only for a value that is not UTF-8 text
MAX_SESSIONS = 10_000
OK: Result = {"ok": True}  # shared: results are never changed, and one per session adds up


@dataclass(slots=True)
class KvImage:
    """Everything the key-value store needs to continue from a snapshot."""

    data: dict[str, Value]
    sessions: dict[int, tuple[int, Any]]
    incarnations: dict[int, int] = field(default_factory=dict)  # member -> incarnation


class KeyValueStore:
    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        """`max_sessions`: only tests change it; every replica must use the same."""
        self.data: dict[str, Value] = {}
        # The keys of `data` in order, for range reads; built by the first scan, so a
        # store nobody scans (or a restart, a snapshot install) never pays for sorting.
        self.keys: SortedList | None = None
        # (key_hash(key), key) in order, for SCAN's cursor; built by the first SCAN.
        self.hashed: SortedList | None = None
        # client id -> (last applied seq, its result), least recently applied first
        self.sessions: OrderedDict[int, tuple[int, Result]] = OrderedDict()
        self.max_sessions = max_sessions
        self.last_applied = 0
        self.incarnations: dict[int, int] = {}  # member -> incarnation, as the log says

    def image(self) -> KvImage:
        """A copy of the state to snapshot, taken now; the copy shares only
        immutable keys and values, so the store can go on applying while it is
        written out."""
        return KvImage(self.data.copy(), self.sessions.copy(), dict(self.incarnations))

    def restore(self, index: int, image: KvImage) -> None:
        """Replace the whole state by a snapshot's, taken at applied index `index`."""
        self.data = image.data
        self.keys = self.hashed = None
        self.sessions = OrderedDict(image.sessions)
        self.incarnations = dict(image.incarnations)
        self.last_applied = index

    def apply(self, index: int, command: bytes | None, decoded: Command | None = None) -> Result | None:
        """Apply the committed entry at `index`. No-ops (None) change nothing.
        `decoded`: the command the caller knows `command` encodes (the leader proposed
        it), saving a decode."""
        if index != self.last_applied + 1:
            raise ValueError(f"apply {index} after {self.last_applied}: the log must be applied in order")
        self.last_applied = index
        if command is None:
            return None
        if decoded is not None:
            cmd = decoded
        else:
            try:
                cmd = Command.decode(command)
            except Exception:
                return {"ok": False, "error": "undecodable command"}
        if cmd.op == "incarnation":
            return self._learn_incarnation(cmd)
        if cmd.op == "register":
            client = REGISTERED + index
            self._remember(client, 0, OK, known=False)  # its index makes the id new
            return {"ok": True, "client": client}
        seen = None
        if cmd.client:
            seen = self.sessions.get(cmd.client)
            if seen is None and cmd.client > REGISTERED:
                return {"ok": False, "session_expired": True, "error": SESSION_FORGOTTEN, "retry": cmd.retry}
            if seen is None and cmd.retry:
                return {"ok": False, "session_expired": True, "error": SESSION_EXPIRED, "retry": True}
            if seen is not None and cmd.seq <= seen[0]:
                if cmd.seq == seen[0]:
                    return seen[1]
                return {"ok": False, "error": f"request {cmd.seq} is older than {seen[0]}, already answered"}
        result = self._execute(cmd)
        if cmd.client:
            self._remember(cmd.client, cmd.seq, result, known=seen is not None)
        return result

    def _learn_incarnation(self, cmd: Command) -> Result:
        """Only a leader proposes these (clients cannot send the op); still, the
        command is checked here, so every replica reads it the same way."""
        value = cmd.value if isinstance(cmd.value, str) else ""
        if not (_decimal(cmd.key) and _decimal(value)):
            return {"ok": False, "error": "malformed incarnation"}
        self.incarnations.setdefault(int(cmd.key), int(value))
        return OK

    def forget_incarnations(self, members: tuple[int, ...]) -> None:
        """A configuration without some nodes was applied: they may come back rebuilt."""
        for node in [n for n in self.incarnations if n not in members]:
            del self.incarnations[node]

    def _remember(self, client: int, seq: int, result: Result, *, known: bool) -> None:
        """`known`: the client has a session (the caller looked it up already)."""
        sessions = self.sessions
        if known:
            sessions.move_to_end(client)
        sessions[client] = (seq, result)
        if len(sessions) > self.max_sessions:
            sessions.popitem(last=False)

    def _execute(self, cmd: Command) -> Result:
        if cmd.op == "set":
            self.put(cmd.key, cmd.value)  # type: ignore[arg-type]
            return OK
        if cmd.op == "get":
            return {"ok": True, "value": self.data.get(cmd.key)}
        if cmd.op == "del":
            return {"ok": True, "existed": self.delete(cmd.key)}
        if cmd.op == "cas":
            current = self.data.get(cmd.key)
            if current != cmd.expect:
                return {"ok": False, "mismatch": True, "value": current}
            self.put(cmd.key, cmd.value)  # type: ignore[arg-type]
            return OK
        if cmd.op == "redis":
            return self._redis(cmd.value)
        return {"ok": False, "error": f"unknown operation {cmd.op!r}"}

    def _redis(self, encoded: object) -> Result:
        """Redis commands (raftproc.kv.redis), one or a MULTI block, as one entry."""
        try:
            commands = cbor2.loads(encoded) if isinstance(encoded, bytes) else None
        except Exception:
            commands = None
        if not (isinstance(commands, list) and all(isinstance(c, list) and c and all(isinstance(a, bytes) for a in c) for c in commands)):
            return {"ok": False, "error": "malformed redis command"}
        return {"ok": True, "redis": redis.execute_all(self, commands)}

    def put(self, key: str, value: Value) -> None:
        # Only the sorted indexes care whether the key is new: a store nobody scans
        # pays one dict lookup a write, not two (a miss in the CPU's cache each).
        if (self.keys is not None or self.hashed is not None) and key not in self.data:
            if self.keys is not None:
                self.keys.add(key)
            if self.hashed is not None:
                self.hashed.add((redis.key_hash(key), key))
        self.data[key] = value

    def delete(self, key: str) -> bool:
        """Whether the key was there."""
        if self.data.pop(key, None) is None:
            return False
        if self.keys is not None:
            self.keys.remove(key)
        if self.hashed is not None:
            self.hashed.remove((redis.key_hash(key), key))
        return True

    def keys_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """At most `limit` keys starting with `prefix`, in order."""
        if self.keys is None:
            self.keys = SortedList(self.data)
        found: list[str] = []
        for key in self.keys.irange(minimum=prefix):
            if not key.startswith(prefix) or len(found) == limit:
                break
            found.append(key)
        return found

    def scan_hashed(self, cursor: int, count: int) -> tuple[list[str], int]:
        """About `count` keys from position `cursor` of the hash order, and the cursor
        after them (0: the walk is over). Keys of one hash are never split across
        pages, or a cursor could not name the place between them."""
        if self.hashed is None:
            self.hashed = SortedList((redis.key_hash(k), k) for k in self.data)
        found: list[str] = []
        last = -1
        for h, key in self.hashed.irange(minimum=(cursor, "")):
            if len(found) >= count and h != last:
                return found, h
            found.append(key)
            last = h
        return found, 0

    def scan(self, prefix: str, after: str | None, limit: int, max_bytes: int = 1 << 20) -> Result:
        """Keys that start with `prefix`, in order, after `after` (a page of a range
        read), with their values: at most `limit` of them and, past the first, at most
        `max_bytes` of keys and values. `more` says whether keys are left."""
        if self.keys is None:
            self.keys = SortedList(self.data)  # once: about a second per million keys
        start = prefix if after is None or after < prefix else after
        items: list[list[Value]] = []
        size = 0
        for key in self.keys.irange(minimum=start, inclusive=(after is None or after < prefix, True)):
            if not key.startswith(prefix):
                return {"ok": True, "items": items, "more": False}
            value = self.data[key]
            if len(items) == limit or (items and size + len(key) + len(value) > max_bytes):
                return {"ok": True, "items": items, "more": True}
            items.append([key, value])
            size += len(key) + len(value)
        return {"ok": True, "items": items, "more": False}

    def state_digest(self) -> str:
        """Equal on two nodes exactly when they hold the same keys and values (up to
        hash collisions). O(keys): a test's question, not a status poll's."""
        return f"{sum(_pair_hash(k, v) for k, v in self.data.items()) % _MOD:032x}"


_MOD = 1 << 128


def _decimal(text: str) -> bool:
    """ASCII digits only ("²".isdigit() is true, and int() refuses it), at most 20."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdecimal()


SESSION_EXPIRED = (
    "session expired: the cluster forgot this client's session (it keeps the most recent "
    f"{MAX_SESSIONS:,}) before this retry arrived, so whether the first attempt was applied is unknown"
)
SESSION_FORGOTTEN = (
    "session expired: the cluster issued this client's id but has since forgotten its session "
    f"(it keeps the {MAX_SESSIONS:,} most recently used); nothing was applied now"
)


# SHA-256 cut to 128 bits: with the SHA extensions of current x86 and ARM cores it
# hashes a 16 KiB value 2.5 times faster than BLAKE2b here (9.8 vs 24 us).
_digest = hashlib.sha256


def _pair_hash(key: str, value: Value) -> int:
    h = _digest(key.encode())
    # The separator also tells text from bytes: "a" and b"a" are different values.
    h.update(b"\0" if isinstance(value, str) else b"\1")
    h.update(value.encode() if isinstance(value, str) else value)
    return int.from_bytes(h.digest()[:16], "big")
