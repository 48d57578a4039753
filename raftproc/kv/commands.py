"""Key-value commands as they travel in the Raft log: CBOR maps.

A command carries the client's id and sequence number so the state machine can
apply a retried request once and answer it with its first result (the session
table in raftproc.kv.state_machine), and whether it is a retry.
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
    # The client may have sent this request before (a retry): if its session is gone,
    # the request may already have been applied, so it must not be applied now.
    retry: bool = False

    def encode(self) -> bytes:
        fields = [self.op, self.key, self.value, self.expect, self.client, self.seq]
        if self.retry:
            fields.append(True)  # absent when false: first attempts keep the older, shorter form
        return cbor2.dumps(fields)

    @classmethod
    def decode(cls, data: bytes) -> Command:
        fields = cbor2.loads(data)
        return cls(*fields[:6], retry=len(fields) > 6 and fields[6] is True)
