"""Key-value commands as they travel in the Raft log: CBOR maps.

A command carries the client's id and sequence number so the state machine can
apply a retried request once and answer it with its first result (the session
table in raftproc.kv.state_machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2


@dataclass(frozen=True, slots=True)
class Command:
    op: str  # "set" | "get" | "del" | "cas"
    key: str
    value: str | None = None
    expect: str | None = None  # cas: the value required now; None means "absent"
    client: int = 0
    seq: int = 0

    def encode(self) -> bytes:
        return cbor2.dumps([self.op, self.key, self.value, self.expect, self.client, self.seq])

    @classmethod
    def decode(cls, data: bytes) -> Command:
        op, key, value, expect, client, seq = cbor2.loads(data)
        return cls(op, key, value, expect, client, seq)
