"""The raftproc client library (`python -m raftproc.client` runs the command line,
raftproc.cli).

With TLS (raftproc.runtime.tls) a client presents its certificate and the node must
present a node certificate from the same CA; `member add|remove` and `transfer`
need an admin certificate.

`Client` connects to any node, follows redirects to the leader, and retries with
backoff until its deadline. Each client has a random id and numbers its requests;
a retry reuses the number, so the cluster applies a request at most once even when
an answer was lost.

Values are text (str) or, when they are not UTF-8, bytes; a value comes back as
the type it was set with.

Outcomes are definite or not, and every failure is a `ClientError`:
- a result: the operation was applied (a cas that found another value is applied
  as a failed comparison: `result["ok"]` is False and `result["mismatch"]` True);
- `Failed`: it certainly was not applied and never will be (`Unreachable`: no
  node answered at all; `Misconfigured`: every node refused how this client talks
  to it, e.g. plaintext to a TLS cluster);
- `Unknown`: the deadline passed while a write might still have been applied (a
  read that fails changed nothing: it is Failed or Unreachable, never Unknown).
"""

from __future__ import annotations

if __name__ == "__main__":
    # Ctrl-C at any moment of the command line (its imports included) ends it quietly
    # with 130; a SIGINT the caller chose to ignore (a background job) stays ignored.
    import signal as _signal
    import sys as _sys

    def _interrupted(signum: int, frame: object) -> None:
        print("interrupted", file=_sys.stderr)
        _sys.exit(130)

    if _signal.getsignal(_signal.SIGINT) is not _signal.SIG_IGN:
        _signal.signal(_signal.SIGINT, _interrupted)

import random
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field, replace
from typing import Any

from raftproc.config import Address, parse_address
from raftproc.kv.commands import REGISTERED
from raftproc.runtime.codec import RemoteProtocolError
from raftproc.runtime.framing import FrameDecoder, FrameError, encode_frame
from raftproc.runtime.linkfaults import LinkFaultsError, parse_link_faults
from raftproc.runtime.protocol import (
    READ_MODES,
    Answer,
    ClientRequest,
    KvRequest,
    LinkFaultsRequest,
    MemberRequest,
    Outcome,
    StatusRequest,
    TransferRequest,
    decode_answer,
    encode_request,
)
from raftproc.runtime.tls import NODE, identity_of

Value = str | bytes  # bytes only for a value that is not UTF-8 text

# What one exchange with a node can raise below the client's own errors; the client
# turns every one of them into a ClientError before a caller sees it.
_WIRE_ERRORS = (OSError, FrameError, RemoteProtocolError, struct.error)


class ClientError(Exception):
    """Every failure the client reports: catch this one."""


class Failed(ClientError):
    """The operation certainly did not take effect."""


class Unknown(ClientError):
    """The operation may or may not have taken effect."""


class Unreachable(Failed):
    """No node answered at all before the deadline: the operation did not take effect."""


class Misconfigured(Failed):
    """Every node refused how this client talks to it (plaintext to a TLS cluster, a
    certificate it does not accept): retrying cannot help."""


class _Conn:
    def __init__(self, address: Address, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock)
            except BaseException:
                sock.close()
                raise
            who = identity_of(sock.getpeercert())
            if who is None or who.role != NODE:
                sock.close()
                raise ssl.SSLError(f"{address[0]}:{address[1]} presented a certificate that names {who or 'no node'}")
        self.sock = sock
        self.decoder = FrameDecoder()

    def call(self, request: ClientRequest, timeout: float) -> Answer:
        self.sock.settimeout(timeout)
        self.sock.sendall(encode_frame(encode_request(request)))
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("node closed the connection")
            for frame in self.decoder.feed(data):
                answer = decode_answer(frame)
                if answer.id == request.id:
                    return answer

    def close(self) -> None:
        self.sock.close()


class Client:
    def __init__(
        self,
        addresses: dict[int, Address],
        *,
        timeout: float = 5.0,
        attempt_timeout: float = 1.0,
        client_id: int | None = None,
        rng: random.Random | None = None,
        max_backoff: float = 0.2,
        read_mode: str = "index",
        tls: ssl.SSLContext | None = None,
        fail_fast: bool = False,
    ) -> None:
        """`tls`: a client context (raftproc.runtime.tls.client_context) for a cluster
        that runs mutual TLS. `read_mode` picks how get() reads: "index" (default) is ReadIndex, one
        heartbeat round and no log write; "log" commits the read as a log entry;
        "lease" skips the round while the leader holds a lease (it assumes the
        nodes' clock rates stay within max_clock_drift; see raftproc.core.reads). All three are
        linearizable under that assumption; "index" and "log" without it.
        `fail_fast`: give up as soon as every node refused a new connection or closed
        it unanswered (the command line: a person wants the mistake named now; a
        program riding out a restart wants the retries)."""
        if read_mode not in READ_MODES:
            raise ValueError(f"read_mode must be one of {READ_MODES}")
        self.read_mode = read_mode
        self.tls = tls
        self.fail_fast = fail_fast
        if not addresses:
            raise ValueError("no node addresses")
        self.addresses = dict(addresses)
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.max_backoff = max_backoff
        self.rng = rng or random.Random()
        # None until the first write registers this client (raftproc.kv.state_machine:
        # an id the cluster issued lets it tell a new client from a forgotten one).
        # A `client_id` given here is the caller's own, at most REGISTERED.
        if client_id is not None and not 0 < client_id <= REGISTERED:
            raise ValueError(f"a client's own id must be 1 to {REGISTERED}")
        self.client_id = client_id
        self._registers = client_id is None
        self.seq = 0
        self._request_id = 0
        self._conns: dict[Address, _Conn] = {}
        self._target: Address = self.rng.choice(list(self.addresses.values()))
        self._answered_by: Address | None = None  # the node that gave the last "ok"
        # The last operation's attempts, in order: {"node", "status"[, "leader"]}, so
        # a person can see who answered and who redirected (the live page shows it).
        self.route: list[dict[str, Any]] = []

    # --- operations ---------------------------------------------------------------

    def set(self, key: str, value: Value, *, trace: bool = False) -> dict[str, Any]:
        """`trace`: every node logs this write's way through Raft (supervisor.py timeline)."""
        return self.request("set", key, value=value, trace=trace)

    def get(self, key: str, *, read: str | None = None) -> Value | None:
        return self.request("get", key, read=read or self.read_mode)["value"]

    def scan(self, prefix: str, *, page: int = 1000, read: str | None = None) -> list[tuple[str, Value]]:
        """Every key that starts with `prefix`, with its value, in order, read a page at
        a time. Each page is linearizable on its own; the whole listing is not one
        snapshot (a write between two pages shows in the later one only)."""
        items: list[tuple[str, Value]] = []
        after: str | None = None
        mode = read or (self.read_mode if self.read_mode != "log" else "index")
        while True:
            self.seq += 1
            page_request = _kv("scan", prefix, client=self.client_id or 0, seq=self.seq, read=mode, after=after, limit=page)
            result = self._ask(page_request, f"scan {prefix}")
            items += [(k, v) for k, v in result["items"]]
            if not result["more"] or not result["items"]:
                return items
            after = result["items"][-1][0]

    def delete(self, key: str) -> dict[str, Any]:
        return self.request("del", key)

    def cas(self, key: str, expect: Value | None, new: Value) -> dict[str, Any]:
        return self.request("cas", key, value=new, expect=expect)

    def request(
        self,
        op: str,
        key: str,
        *,
        value: Value | None = None,
        expect: Value | None = None,
        read: str = "log",
        trace: bool = False,
    ) -> dict[str, Any]:
        """Run one operation to a definite outcome within the deadline, or raise."""
        deadline = time.monotonic() + self.timeout
        self.seq += 1
        in_log = not (op == "get" and read != "log")
        client = self._session(deadline, f"{op} {key}") if in_log else self.client_id or 0
        req = _kv(op, key, value=value, expect=expect, client=client, seq=self.seq, read=read if op == "get" else "log", trace=trace)
        return self._ask(req, f"{op} {key}", deadline=deadline)

    def _session(self, deadline: float, what: str) -> int:
        """This client's id, registering it through the log the first time (for
        `what`, which a failure names: the person asked for it, not the register)."""
        if self.client_id is None:
            self.client_id = self._ask(_kv("register", "", client=0, seq=0), f"{what} (registering this client)", deadline=deadline)[
                "client"
            ]
        return self.client_id

    def transfer(self, target: int | None = None, *, ask: int | None = None) -> int:
        """Ask the leader (`ask`: try this node first) to hand leadership to
        `target` (None: its most up-to-date follower) and wait until another node
        leads. Returns the new leader's id."""
        if ask is not None:
            self._target = self.addresses[ask]
        deadline = time.monotonic() + self.timeout
        result = self._ask(TransferRequest(id=0, target=target), "transfer", deadline=deadline)
        chosen = result["target"]
        if result.get("already"):
            return chosen  # it leads already: nothing to hand over
        old = self.answered_by
        while time.monotonic() < deadline:
            leader = self._leader_seen_by(chosen)
            if leader is not None and leader != old:
                self._target = self.addresses[leader]
                return leader
            time.sleep(0.01)  # poll interval of a wait-until loop
        raise Unknown(f"leadership handed to node {chosen} did not show within {self.timeout}s")

    def member(self, op: str, node: int | None = None, peer: str | None = None, client: str | None = None) -> dict[str, Any]:
        """`list` the configuration, or `add` / `remove` a node, on the leader. An add
        returns once the node votes (it joins as a learner and catches up first);
        an answer of "unknown" (leadership moved mid-way) is retried with the same
        command, which goes on from where the change stands."""
        addresses = None
        if op == "add":
            addresses = (parse_address(peer or ""), parse_address(client or ""))  # ValueError: the caller's mistake
        req = MemberRequest(id=0, op=op, node=node or 0, addresses=addresses)
        # The leader answers an add only once the learner caught up: one attempt may
        # take the whole deadline.
        return self._ask(req, f"member {op}", whole_deadline=True)

    def _ask(self, request: ClientRequest, what: str, *, deadline: float | None = None, whole_deadline: bool = False) -> dict[str, Any]:
        """The one retry loop: send `body` to the node believed to lead, follow
        redirects, and back off (exponentially, up to max_backoff) before every
        retry that is not a fresh redirect, until the answer is "ok" (its result is
        returned), "error" (Failed), or the deadline passes: Unknown when an
        attempt may have reached a leader's log, else Failed."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        tries = _Attempts(changes_state=not _is_read(request))
        delay = min(0.01, self.max_backoff)
        self.route = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._out_of_time(what, tries)
            target = self._target
            if tries.maybe_sent and isinstance(request, KvRequest):
                request.retry = True  # the store must not open a new session for it
            fresh = target not in self._conns
            try:
                answer = self._call(target, request, remaining if whole_deadline else min(self.attempt_timeout, remaining))
            except _WIRE_ERRORS as e:
                self._no_answer(target, e, fresh, tries, what)
            else:
                tries.answered = True
                self._note_attempt(target, answer.status.value, answer.leader)
                if answer.status is Outcome.OK:
                    self._answered_by = target
                    return answer.result
                if answer.status is Outcome.SESSION_EXPIRED:
                    self._renew_session(request, f"{what}: {answer.error}", deadline, tries)
                    continue
                if self._follow(answer, target, what, tries):
                    continue
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, self.max_backoff)

    def _no_answer(self, target: Address, e: BaseException, fresh: bool, tries: _Attempts, what: str) -> None:
        """An attempt that got no answer: try another node next."""
        # The request may have reached the node before the connection broke.
        tries.maybe_sent = tries.maybe_sent or not isinstance(e, ConnectionRefusedError)
        where = f"{target[0]}:{target[1]}"
        tries.last_error = f"node {where}: {e or type(e).__name__}"
        self._note_attempt(target, f"no answer ({type(e).__name__})")
        self._drop(target)
        self._target = self._other_node(target)
        tries.redirects = 0
        # A connection made before this attempt worked once: the nodes speak our
        # protocol, and this failure is an ordinary one.
        tries.spoke = tries.spoke or not fresh
        if not tries.spoke and not tries.answered:
            tries.rejected[target] = _rejection(where, e, self.tls is not None)
            if self.fail_fast and set(self.addresses.values()) <= set(tries.rejected):
                raise _diagnosis(what, tries.rejected)

    def _follow(self, answer: Answer, target: Address, what: str, tries: _Attempts) -> bool:
        """A status other than ok: raise Failed for an error, or say whether to retry
        at once (a first redirect) rather than after a backoff."""
        status = answer.status
        if status is Outcome.ERROR:
            raise Failed(f"{what}: rejected: {answer.error}")
        if status is Outcome.REDIRECT:
            self._target = self._redirected(answer, target)
            tries.last_error = f"redirected to node {answer.leader}"
            tries.redirects += 1
            return tries.redirects == 1  # two nodes pointing at each other must not spin
        tries.redirects = 0
        tries.maybe_sent = tries.maybe_sent or status is Outcome.UNKNOWN
        tries.last_error = f"{status.value}: {answer.error or 'no leader known'}"
        if status in (Outcome.NO_LEADER, Outcome.DISK_FULL):
            self._target = self._other_node(target)
        return False

    def _out_of_time(self, what: str, tries: _Attempts) -> ClientError:
        if tries.maybe_sent and tries.changes_state:
            return Unknown(f"{what}: outcome unknown after {self.timeout}s ({tries.last_error})")
        if not tries.answered:
            return Unreachable(f"{what}: no node answered within {self.timeout}s ({tries.last_error})")
        return Failed(f"{what}: no leader accepted it within {self.timeout}s ({tries.last_error})")

    def _renew_session(self, request: ClientRequest, expired: str, deadline: float, tries: _Attempts) -> None:
        """The cluster forgot this client's session. A retry may have been applied
        before it did: Unknown (a read changed nothing: Failed). A first attempt was
        not: a fresh id makes it a first attempt again."""
        assert isinstance(request, KvRequest), "only key-value requests have sessions"
        if request.retry or not self._registers:
            raise Unknown(expired) if tries.changes_state else Failed(expired)
        self.client_id = None
        request.client = self._session(deadline, expired)

    def _note_attempt(self, address: Address, status: str, leader: Any = None) -> None:
        node = self.node_at(address)
        self.route.append({"node": node, "status": status, **({"leader": leader} if isinstance(leader, int) else {})})
        del self.route[:-32]  # a long outage retries many times; the last attempts tell enough

    def node_at(self, address: Address | None) -> int | None:
        return next((i for i, a in self.addresses.items() if a == address), None)

    @property
    def answered_by(self) -> int | None:
        """The node that gave the last "ok"."""
        return self.node_at(self._answered_by)

    def _leader_seen_by(self, node_id: int) -> int | None:
        try:
            s = self.status(node_id, timeout=self.attempt_timeout)
        except ClientError:
            return None
        return s.get("leader")

    def status(self, node_id: int, timeout: float = 1.0, *, state: bool = False) -> dict[str, Any]:
        """`state`: also the node's state digest (it hashes every key: for tests)."""
        return self.status_at(self.addresses[node_id], timeout, state=state)

    def status_at(self, address: Address, timeout: float = 1.0, *, state: bool = False) -> dict[str, Any]:
        """The status of the node at `address`, which need not be one of `addresses`."""
        return self._call_once(address, StatusRequest(id=0, state=state), timeout)

    def link_faults(self, node_id: int, faults: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
        """Replace node `node_id`'s injected link faults (raftproc.runtime.linkfaults:
        `drop_to`, `drop_from`, `delay_ms`); needs an admin certificate under TLS and
        `link_faults = true` in the node's config."""
        try:
            request = LinkFaultsRequest(id=0, faults=parse_link_faults(faults))
        except LinkFaultsError as e:
            raise Failed(f"node {node_id}: {e}") from None
        return self._call_once(self.addresses[node_id], request, timeout)

    def close(self) -> None:
        for address in list(self._conns):
            self._drop(address)

    # --- plumbing -------------------------------------------------------------------

    def _call_once(self, address: Address, request: ClientRequest, timeout: float) -> Any:
        """One exchange with one node, no retry: its result, or a ClientError."""
        where = f"{address[0]}:{address[1]}"
        try:
            answer = self._call(address, request, timeout)
        except _WIRE_ERRORS as e:
            raise Unreachable(f"node {where}: {type(e).__name__}: {e}") from e
        if answer.status is not Outcome.OK:
            raise Failed(f"node {where}: {answer.error or answer.status.value}")
        return answer.result

    def _call(self, address: Address, request: ClientRequest, timeout: float) -> Answer:
        """One attempt, under a request id of its own."""
        self._request_id += 1
        conn = self._conns.get(address)
        if conn is None:
            conn = self._conns[address] = _Conn(address, timeout, self.tls)
        try:
            return conn.call(replace(request, id=self._request_id), timeout)
        except BaseException:
            # A connection that failed mid-call may hold half an answer, or be dead:
            # every caller (status too) reconnects on its next call.
            self._drop(address)
            raise

    def _drop(self, address: Address) -> None:
        conn = self._conns.pop(address, None)
        if conn is not None:
            conn.close()

    def _redirected(self, answer: Answer, current: Address) -> Address:
        """Where a redirect points. A leader this client was not told about (a node
        that joined later) is remembered, so it is still reachable when every
        node the client started with has been removed."""
        address = parse_optional_address(answer.leader_addr)
        if address is None:
            return self._other_node(current)
        leader = answer.leader
        if leader is not None and leader not in self.addresses:
            self.addresses[leader] = address
        return address

    def _other_node(self, current: Address) -> Address:
        others = [a for a in self.addresses.values() if a != current]
        return self.rng.choice(others) if others else current


@dataclass(slots=True)
class _Attempts:
    """What the attempts of one operation have learnt so far."""

    changes_state: bool  # False for a read: its failure is never "unknown"
    maybe_sent: bool = False  # has any attempt possibly reached a leader's log?
    answered: bool = False  # has any node answered at all?
    spoke: bool = False  # did an attempt go over a connection that had worked before?
    redirects: int = 0  # in a row
    last_error: str = "no attempt made"
    # Nodes that refused a new connection or closed it unanswered: what each said.
    rejected: dict[Address, str] = field(default_factory=dict)


def _kv(op: str, key: str, *, client: int, seq: int, value: Value | None = None, expect: Value | None = None, **fields: Any) -> KvRequest:
    """A key-value request; its id is set per attempt."""
    return KvRequest(id=0, op=op, key=key, value=value, expect=expect, client=client, seq=seq, **{"read": "log", **fields})


def _is_read(request: ClientRequest) -> bool:
    return isinstance(request, (KvRequest, MemberRequest)) and request.op in ("get", "scan", "list")


def _rejection(where: str, e: BaseException, tls: bool) -> str:
    if isinstance(e, ConnectionRefusedError):
        return f"{where}: connection refused"
    if not tls and isinstance(e, (ConnectionError, FrameError, RemoteProtocolError)):
        # A TLS node reads our plaintext frame as a broken handshake: it closes at
        # once or answers with a TLS alert, which is no frame of ours.
        return f"node {where} closed the connection at once: is it a TLS cluster? pass --config or --cacert/--cert/--key"
    return f"{where}: {type(e).__name__}: {e}"


def _diagnosis(what: str, rejected: dict[Address, str]) -> ClientError:
    """Every node rejected us at once: name each, without waiting out the deadline."""
    refused = all(text.endswith("connection refused") for text in rejected.values())
    detail = "; ".join(rejected.values())
    if refused:
        return Unreachable(f"{what}: every node refused the connection ({detail})")
    return Misconfigured(f"{what}: every node rejected the connection ({detail})")


def parse_optional_address(text: str | None) -> Address | None:
    try:
        return parse_address(text) if text else None
    except ValueError:
        return None


if __name__ == "__main__":
    # `python -m raftproc.client` is the command line's documented name; the command
    # line itself lives above this library (raftproc.cli), so it is run, not imported.
    import runpy

    runpy.run_module("raftproc.cli", run_name="__main__")
