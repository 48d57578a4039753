"""The chaos workload's client over the RESP port, through redis-py: what a Redis
user's program meets, with the contract of raftproc.client.Client, so the workload
records the same history either way.

- set, get, delete: SET, GET, DEL.
- cas with expect None (absent): `SET key value NX GET`, which sets only an absent
  key and answers the value it found. Redis has no compare-and-set on a present
  value, so the workload does not ask this client for one.

A call raises Failed only when the command certainly did not take effect and
Unknown when it may have (the history then leaves its outcome open). What the RESP
port says decides it (docs/redis.md): `-UNKNOWN` is unknown; `-CLUSTERDOWN`,
`-TRYAGAIN`, `-MISCONF` and a connection refused are definite, and the call tries
the next node until its time is up. A connection lost or timed out after a write
was sent is unknown; a read is simply asked again. redis-py's own retries are
off: a retry it made silently would make one recorded operation two.
"""

from __future__ import annotations

import random
import time
from typing import Any

from raftproc.client import Failed, Unknown
from raftproc.config import Address
from raftproc.runtime.tls import TlsFiles

# Answers that say nothing was run: another node (or the same later) may do better.
NOT_RUN = ("CLUSTERDOWN", "TRYAGAIN", "MISCONF")
RETRY_PAUSE = 0.05  # seconds between tries of a command that was certainly not run


def _redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - the test extra installs it
        raise SystemExit("--protocol redis needs redis-py: pip install redis (it is in raftproc's test extra)") from None
    return redis


class RedisKvClient:
    def __init__(self, addresses: dict[int, Address], *, timeout: float, rng: random.Random, tls: TlsFiles | None = None) -> None:
        self.addresses = addresses
        self.timeout = timeout
        self.rng = rng
        self.tls = tls
        self._redis = _redis()
        self._node: int | None = None
        self._conn: Any = None

    # --- the Client contract the workload uses ---------------------------------------

    def set(self, key: str, value: str) -> None:
        answer = self._call(True, "SET", key, value)
        if answer not in (b"OK", "OK"):
            raise Failed(f"SET answered {answer!r}")

    def get(self, key: str) -> str | None:
        value = self._call(False, "GET", key)
        return None if value is None else value.decode()

    def delete(self, key: str) -> None:
        self._call(True, "DEL", key)

    def cas(self, key: str, expect: str | None, value: str) -> dict[str, Any]:
        if expect is not None:
            raise ValueError("Redis compares with nothing but an absent key (SET NX)")
        found = self._call(True, "SET", key, value, "NX", "GET")
        return {"ok": True} if found is None else {"ok": False, "mismatch": True, "value": found.decode()}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- one command, honestly -----------------------------------------------------

    def _call(self, write: bool, *args: str) -> Any:
        deadline = time.monotonic() + self.timeout
        errors = self._redis.exceptions
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"{args[0]} was not run within {self.timeout} s")
            try:
                return self._connection().execute_command(*args)
            except errors.ResponseError as e:
                self._settle(e, write)
            except (errors.ConnectionError, errors.TimeoutError) as e:
                self._drop()
                # "connecting to": the connection never came up, so nothing was sent.
                if write and "connecting to" not in str(e):
                    raise Unknown(f"{args[0]}: {e}") from None
            time.sleep(RETRY_PAUSE)  # then the next node: a definite failure may be retried

    def _settle(self, e: Exception, write: bool) -> None:
        """An error reply: raise, unless it says nothing was run (then try another node)."""
        text = str(e)
        code = getattr(e, "status_code", None) or text.split(" ", 1)[0]
        named = type(e).__name__
        if code == "UNKNOWN" or text.startswith("UNKNOWN"):
            raise Unknown(text)
        if code in NOT_RUN or named in ("ClusterDownError", "TryAgainError"):
            self._drop()
            return
        raise Failed(text)

    def _connection(self) -> Any:
        if self._conn is None:
            nodes = sorted(self.addresses)
            if self._node in nodes:
                self._node = nodes[(nodes.index(self._node) + 1) % len(nodes)]
            else:
                self._node = self.rng.choice(nodes)
            host, port = self.addresses[self._node]
            tls: dict[str, Any] = {}
            if self.tls is not None:
                tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca), "ssl_certfile": str(self.tls.cert), "ssl_keyfile": str(self.tls.key)}
            # A write's answer may take the whole time: a timeout on it is "unknown",
            # and an early one would make unknowns of writes that were only slow.
            self._conn = self._redis.Redis(
                host=host, port=port, socket_timeout=self.timeout, socket_connect_timeout=min(self.timeout, 1.0), retry=None, **tls
            )
            # redis-py turns SET's answer into a bool; SET ... GET answers a value.
            self._conn.set_response_callback("SET", lambda response, **options: response)
        return self._conn

    def _drop(self) -> None:
        """Forget this node's connection: the next try goes to the next node."""
        self.close()
