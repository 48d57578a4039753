"""Key-value commands as they travel in the Raft log: CBOR maps.

A command carries the client's id and sequence number so the state machine can
apply a retried request once and answer it with its first result (the session
table in raftproc.kv.state_machine), and whether it is a retry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from raftproc.kv import cbor
from raftproc.kv.cbor import COMPILED, Unhandled

# Client ids above this were issued by a `register` entry (this + its index); ids up
# to it are chosen by clients (raftproc.kv.state_machine says why both exist).
REGISTERED = 1 << 62


@dataclass(slots=True, init=False)
class Command:
    # Not frozen, and its __init__ written by hand, like KvRequest: every write builds
    # one on the leader and decodes one on each follower; a frozen __init__ costs a
    # setattr call per field, and under mypyc a generated one stays interpreted.
    # Treated as immutable all the same.
    op: str  # "set" | "get" | "del" | "cas" | "register" | "incarnation" (a scan is never logged)
    key: str
    # Text, or bytes for a value that is not UTF-8 text (CBOR keeps the two apart).
    value: str | bytes | None
    expect: str | bytes | None  # cas: the value required now; None means "absent"
    client: int
    seq: int
    # The client may have sent this request before (a retry): if its session is gone,
    # the request may already have been applied, so it must not be applied now.
    retry: bool
    # Every node logs this command's way through Raft (`supervisor.py timeline`).
    trace: bool

    def __init__(
        self,
        op: str,
        key: str,
        value: str | bytes | None = None,
        expect: str | bytes | None = None,
        client: int = 0,
        seq: int = 0,
        retry: bool = False,
        trace: bool = False,
    ) -> None:
        self.op = op
        self.key = key
        self.value = value
        self.expect = expect
        self.client = client
        self.seq = seq
        self.retry = retry
        self.trace = trace

    def encode(self) -> bytes:
        if COMPILED and not (self.retry or self.trace):
            try:
                return _encode_plain(self)
            except Unhandled:
                pass
        fields = [self.op, self.key, self.value, self.expect, self.client, self.seq]
        if self.retry or self.trace:
            fields.append(self.retry)  # absent when false: first attempts keep the older, shorter form
        if self.trace:
            fields.append(True)  # the only 8-element form: is_traced() looks at one byte
        return cbor2.dumps(fields)

    @classmethod
    def decode(cls, data: bytes) -> Command:
        if COMPILED:
            try:
                return _decode_plain(data)
            except Unhandled:
                pass
        fields = cbor2.loads(data)
        op, key, value, expect, client, seq = fields[:6]
        return cls(
            op, key, value, expect, client, seq, retry=len(fields) > 6 and fields[6] is True, trace=len(fields) > 7 and fields[7] is True
        )

    def describe(self) -> str:
        """As people write it: SET x=10, GET x, DEL x, CAS x 1->2."""
        if self.op == "set":
            return f"SET {self.key[:40]}={_shown(self.value, 40)}"
        if self.op == "cas":
            return f"CAS {self.key[:40]} {_shown(self.expect, 20) if self.expect is not None else None}->{_shown(self.value, 20)}"
        return f"{self.op.upper()} {self.key[:40]}".rstrip()  # REGISTER has no key


def _encode_plain(cmd: Command) -> bytes:
    """Command.encode of a first attempt, untraced (nearly every write), without cbor2."""
    out = [b"\x86"]  # an array of six
    cbor.put_text(out, cmd.op)
    cbor.put_text(out, cmd.key)
    cbor.put_text_bytes_or_null(out, cmd.value)
    cbor.put_text_bytes_or_null(out, cmd.expect)
    cbor.put_uint(out, cmd.client)
    cbor.put_uint(out, cmd.seq)
    return b"".join(out)


def _decode_plain(data: bytes) -> Command:
    """Command.decode of the six-element form, without cbor2; Unhandled for any other."""
    r = cbor.Reader(data)
    if r.initial() != 0x86:
        raise Unhandled
    cmd = Command(r.text(), r.text(), r.text_bytes_or_null(), r.text_bytes_or_null(), r.uint(), r.uint())
    if r.pos != len(data):
        raise Unhandled
    return cmd


def _shown(value: str | bytes | None, width: int) -> str:
    """A value cut to `width` as a log line shows it; bytes as Python writes them."""
    return (value if isinstance(value, str) else repr(value) if value is not None else "")[:width]


def is_traced(command: bytes | None) -> bool:
    """Whether an encoded command asks to be traced, without decoding it: a CBOR array
    of eight elements starts with the byte 0x88, and only traced commands have eight."""
    return bool(command) and command[0] == 0x88  # type: ignore[index]
