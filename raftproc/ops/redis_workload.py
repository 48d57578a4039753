"""The chaos workload's clients speaking the Redis protocol: each talks to one
node's RESP port through redis-py at a time (any node serves any command: a
follower forwards to the leader), and moves to another node when that one cannot
serve it.

Each operation is one command, sent once, and its answer says what the history
records (docs/redis.md's table of errors):
- a reply: it ran;
- `-CLUSTERDOWN`, `-TRYAGAIN`, `-MISCONF`, `-ERR`: refused, nothing ran (Failed);
- `-UNKNOWN`: a write may have run (Unknown); a read changed nothing either way, so
  it simply failed;
- no connection made: nothing was sent (Failed);
- the connection lost or timed out after the command left: a write may have run
  (Unknown), a read failed;
- an error code the port does not send: a write is Unknown, not guessed Failed.

redis-py (6 and later) resends a command after a connection error unless told
not to: a resent SET would be one recorded operation applied twice, so every
connection here has zero retries.

Redis has no compare-and-set against a value (no WATCH, no scripts on this port),
but `SET key value NX GET` compares against absence: it writes only when the key
is absent and returns what it found. That is the checker's cas with `expect`
null, a mismatch reading the value found; so these clients' cas never expects a
value (`compares_values`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisError, ResponseError, TryAgainError
from redis.retry import Retry

from raftproc.client import Failed, Unknown
from raftproc.config import Address
from raftproc.runtime.tls import TlsFiles

# Error replies that promise nothing ran.
NOT_RUN = ("CLUSTERDOWN", "TRYAGAIN", "MISCONF", "ERR")
# Error replies after which another node may serve us better: no leader known from
# here, this node's disk is full, or its way to the leader broke.
MOVE_ON = ("CLUSTERDOWN", "MISCONF", "UNKNOWN")
# The most a client waits, at random, before its next command after moving on.
# A refusal comes at once (nothing listening, no leader): without a pause the
# clients would spin through thousands of failed commands a second, on the cores
# the recovering nodes need. raftproc's own client backs off as much (max_backoff).
BACKOFF_S = 0.2


def error_code(e: Exception) -> str | None:
    """The code an error reply starts with (ERR, CLUSTERDOWN, ...); None when the
    server sent no error reply (the connection failed or timed out)."""
    code = getattr(e, "status_code", None)  # redis-py 8 keeps it; older ones strip it
    if code:
        return str(code)
    if isinstance(e, ClusterDownError):
        return "CLUSTERDOWN"
    if isinstance(e, TryAgainError):
        return "TRYAGAIN"
    if isinstance(e, ResponseError):
        word = str(e).split(" ", 1)[0]
        return word if word.isupper() else "ERR"  # older redis-py strips "ERR " only
    return None


def outcome_error(e: Exception, *, write: bool, sent: bool) -> Failed | Unknown:
    """What `e` means for the history. `sent`: the command left this client."""
    code = error_code(e)
    if not sent:
        return Failed(f"no connection: {e}")
    if code in NOT_RUN or not write:
        return Failed(f"{code or 'connection'}: {e}")
    return Unknown(f"{code or 'connection lost after sending'}: {e}")


class RedisKV:
    """One workload client over RESP, with the native Client's operations and
    outcomes (a result, Failed or Unknown), so raftproc.ops.workload.run_one
    records both alike. Not thread-safe: one per client thread."""

    def __init__(self, addresses: dict[int, Address], *, timeout: float, rng: random.Random, tls: TlsFiles | None = None) -> None:
        """`addresses`: the nodes' RESP addresses. `timeout`: for one command's answer,
        and for connecting (which includes redis-py's handshake)."""
        if not addresses:
            raise ValueError("no RESP addresses")
        self.timeout = timeout
        self.rng = rng
        self.tls = tls
        self._addresses = dict(addresses)
        self._node = rng.choice(sorted(self._addresses))
        self._conn: redis.Redis | None = None

    @property
    def addresses(self) -> dict[int, Address]:
        return self._addresses

    @addresses.setter
    def addresses(self, addresses: dict[int, Address]) -> None:
        """The members' RESP addresses now; a client whose node left moves on."""
        if not addresses:
            return
        self._addresses = dict(addresses)
        if self._node not in self._addresses:
            self._move_on()

    @property
    def node(self) -> int:
        """The node this client talks to now."""
        return self._node

    def set(self, key: str, value: str) -> None:
        self._run(True, lambda r: r.set(key, value))

    def get(self, key: str) -> str | None:
        value: str | None = self._run(False, lambda r: r.get(key))
        return value

    def delete(self, key: str) -> None:
        self._run(True, lambda r: r.delete(key))

    def cas(self, key: str, expect: str | None, new: str) -> dict[str, Any]:
        """Set `key` to `new` only if it is absent: `expect` must be None."""
        if expect is not None:
            raise ValueError("over RESP a cas can only expect the key absent (SET NX GET)")
        found = self._run(True, lambda r: r.set(key, new, nx=True, get=True))
        return {"ok": True} if found is None else {"ok": False, "mismatch": True, "value": found}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, write: bool, command: Callable[[redis.Redis], Any]) -> Any:
        """`command` sends one command on the connection it is given."""
        sent = False
        try:
            conn = self._connected()
            sent = True
            return command(conn)
        except (RedisError, OSError) as e:  # OSError: in case a socket error escapes redis-py's wrapping
            code = error_code(e)
            if code is None or code in MOVE_ON:
                self._move_on()
                time.sleep(self.rng.uniform(0, BACKOFF_S))  # see BACKOFF_S
            raise outcome_error(e, write=write, sent=sent) from None

    def _connected(self) -> redis.Redis:
        """The connection to the current node, made (with its handshake) before any
        command is sent, so a failure here certainly sent nothing."""
        if self._conn is None:
            host, port = self._addresses[self._node]
            self._conn = redis.Redis(host=host, port=port, **self._options())
        return self._conn

    def _options(self) -> dict[str, Any]:
        tls: dict[str, Any] = {}
        if self.tls is not None:
            # The node's certificate must come from our CA; it names a node id, not a
            # host name (raftproc.runtime.tls checks ids, redis-py cannot).
            cert, key = (str(self.tls.cert), str(self.tls.key)) if self.tls.cert is not None else (None, None)
            tls = dict(ssl=True, ssl_ca_certs=str(self.tls.ca), ssl_certfile=cert, ssl_keyfile=key, ssl_check_hostname=False)
        return dict(
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,  # connects here, in the constructor
            decode_responses=True,  # the workload's keys and values are text
            protocol=2,
            **tls,
        )

    def _move_on(self) -> None:
        """Close this connection and pick another node at random (any node serves)."""
        self.close()
        others = sorted(n for n in self._addresses if n != self._node)
        self._node = self.rng.choice(others) if others else next(iter(self._addresses))


class RedisDialer:
    """Makes the workload's clients over RESP; `addresses()` gives the current
    members' RESP addresses (a node without a RESP port is left out)."""

    name = "redis"
    compares_values = False  # see the module's note on cas

    def __init__(self, addresses: Callable[[], dict[int, Address]], *, timeout: float, tls: TlsFiles | None = None) -> None:
        self._addresses = addresses
        self.timeout = timeout
        self.tls = tls

    def addresses(self) -> dict[int, Address]:
        return self._addresses()

    def dial(self, rng: random.Random) -> RedisKV:
        return RedisKV(self.addresses(), timeout=self.timeout, rng=rng, tls=self.tls)
