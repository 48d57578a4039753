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
sessions at the same index. A request from an unknown client opens a session if it
is a first attempt; if it is a retry (its earlier attempt may have been applied
before the session was forgotten), it is refused as "session expired" and nothing
is applied: the client reports the outcome as unknown instead of risking a second
apply. The first attempt of a request always precedes its retries in the log: an
entry from an older term is committed only below the newer leader's entries.

The log digest is a chain (d_i = H(d_{i-1}, i, command_i)) rather than one running
hash, so it can be carried in a snapshot and continued on the node restoring it.
The state digest is the sum (mod 2**128) of a hash of every key-value pair, kept up
to date on each write: a status request must not sort and hash a million keys on
the event loop (that once stalled a leader long enough to lose an election).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedList

from raftproc.kv.commands import Command

Result = dict[str, Any]
MAX_SESSIONS = 10_000
_OK: Result = {"ok": True}  # shared: results are never changed, and one per session adds up


@dataclass(slots=True)
class KvImage:
    """Everything the key-value store needs to continue from a snapshot."""

    data: dict[str, str]
    sessions: dict[int, tuple[int, Any]]
    digest: str  # the log digest at the snapshot's index
    state_sum: int = 0  # the state digest's running sum (see state_digest)


class KeyValueStore:
    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        """`max_sessions`: only tests change it; every replica must use the same."""
        self.data: dict[str, str] = {}
        # The keys of `data` in order, for range reads; built by the first scan, so a
        # store nobody scans (or a restart, a snapshot install) never pays for sorting.
        self.keys: SortedList | None = None
        # client id -> (last applied seq, its result), least recently applied first
        self.sessions: OrderedDict[int, tuple[int, Result]] = OrderedDict()
        self.max_sessions = max_sessions
        self.last_applied = 0
        self._log_digest = bytes(16)
        self._state_sum = 0

    def image(self) -> KvImage:
        """A copy of the state to snapshot, taken now; the copy shares only
        immutable keys and values, so the store can go on applying while it is
        written out."""
        return KvImage(self.data.copy(), self.sessions.copy(), self._log_digest.hex(), self._state_sum)

    def restore(self, index: int, image: KvImage) -> None:
        """Replace the whole state by a snapshot's, taken at applied index `index`."""
        self.data = image.data
        self.keys = None
        self.sessions = OrderedDict(image.sessions)
        self._log_digest = bytes.fromhex(image.digest)
        self._state_sum = image.state_sum
        self.last_applied = index

    def apply(self, index: int, command: bytes | None) -> Result | None:
        """Apply the committed entry at `index`. No-ops (None) change nothing."""
        if index != self.last_applied + 1:
            raise ValueError(f"apply {index} after {self.last_applied}: the log must be applied in order")
        self.last_applied = index
        if command is None:
            return None
        self._log_digest = hashlib.blake2b(self._log_digest + index.to_bytes(8, "big") + command, digest_size=16).digest()
        try:
            cmd = Command.decode(command)
        except Exception:
            return {"ok": False, "error": "undecodable command"}
        if cmd.client:
            seen = self.sessions.get(cmd.client)
            if seen is None and cmd.retry:
                return {"ok": False, "session_expired": True, "error": SESSION_EXPIRED}
            if seen is not None and cmd.seq <= seen[0]:
                if cmd.seq == seen[0]:
                    return seen[1]
                return {"ok": False, "error": f"request {cmd.seq} is older than {seen[0]}, already answered"}
        result = self._execute(cmd)
        if cmd.client:
            self._remember(cmd.client, cmd.seq, result)
        return result

    def _remember(self, client: int, seq: int, result: Result) -> None:
        sessions = self.sessions
        if client in sessions:
            sessions.move_to_end(client)
        sessions[client] = (seq, result)
        if len(sessions) > self.max_sessions:
            sessions.popitem(last=False)

    def _execute(self, cmd: Command) -> Result:
        if cmd.op == "set":
            self._put(cmd.key, cmd.value)  # type: ignore[arg-type]
            return _OK
        if cmd.op == "get":
            return {"ok": True, "value": self.data.get(cmd.key)}
        if cmd.op == "del":
            old = self.data.pop(cmd.key, None)
            if old is not None:
                self._state_sum = (self._state_sum - _pair_hash(cmd.key, old)) % _MOD
                if self.keys is not None:
                    self.keys.remove(cmd.key)
            return {"ok": True, "existed": old is not None}
        if cmd.op == "cas":
            current = self.data.get(cmd.key)
            if current != cmd.expect:
                return {"ok": False, "mismatch": True, "value": current}
            self._put(cmd.key, cmd.value)  # type: ignore[arg-type]
            return _OK
        return {"ok": False, "error": f"unknown operation {cmd.op!r}"}

    def _put(self, key: str, value: str) -> None:
        old = self.data.get(key)
        total = self._state_sum + _pair_hash(key, value)
        if old is not None:
            total -= _pair_hash(key, old)
        elif self.keys is not None:
            self.keys.add(key)
        self._state_sum = total % _MOD
        self.data[key] = value

    def scan(self, prefix: str, after: str | None, limit: int, max_bytes: int = 1 << 20) -> Result:
        """Keys that start with `prefix`, in order, after `after` (a page of a range
        read), with their values: at most `limit` of them and, past the first, at most
        `max_bytes` of keys and values. `more` says whether keys are left."""
        if self.keys is None:
            self.keys = SortedList(self.data)  # once: about a second per million keys
        start = prefix if after is None or after < prefix else after
        items: list[list[str]] = []
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

    def log_digest(self) -> str:
        """A digest of every command applied so far, in order: equal on two nodes
        exactly when they applied the same log."""
        return self._log_digest.hex()

    def state_digest(self) -> str:
        """Equal on two nodes exactly when they hold the same keys and values
        (up to hash collisions), in O(1)."""
        return f"{self._state_sum:032x}"


_MOD = 1 << 128
SESSION_EXPIRED = (
    "session expired: the cluster forgot this client's session (it keeps the most recent "
    f"{MAX_SESSIONS:,}) before this retry arrived, so whether the first attempt was applied is unknown"
)


def _pair_hash(key: str, value: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode() + b"\0" + value.encode(), digest_size=16).digest(), "big")
