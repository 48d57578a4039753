"""The client protocol's two pairs: a request encoded by a client decodes on the
node to the same typed request, and an answer to the same typed answer."""

from __future__ import annotations

import pytest

from raftproc.runtime.codec import RemoteProtocolError, encode, encode_ok_answer
from raftproc.runtime.linkfaults import LinkFaults
from raftproc.runtime.protocol import (
    Answer,
    KvRequest,
    LinkFaultsRequest,
    MemberRequest,
    Outcome,
    StatusRequest,
    TransferRequest,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)

REQUESTS = [
    StatusRequest(id=1, state=True),
    TransferRequest(id=2, target=None),
    MemberRequest(id=3, op="list"),
    MemberRequest(id=4, op="add", node=9, addresses=(("127.0.0.1", 1), ("127.0.0.1", 2))),
    MemberRequest(id=5, op="remove", node=9),
    LinkFaultsRequest(id=6, faults=LinkFaults(frozenset({2}), frozenset(), ((3, 50),), 0)),
    KvRequest(id=7, op="set", key="k", value=b"\xff", expect=None, client=7, seq=1, read="log", retry=True, trace=True),
    KvRequest(id=8, op="cas", key="k", value="w", expect="v", client=7, seq=2, read="log"),
    KvRequest(id=9, op="get", key="k", value=None, expect=None, client=0, seq=3, read="lease"),
    KvRequest(id=10, op="scan", key="p/", value=None, expect=None, client=7, seq=4, read="index", after="p/1", limit=2),
    KvRequest(id=11, op="register", key="", value=None, expect=None, client=0, seq=0, read="log"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: f"{type(r).__name__}-{r.id}")
def test_a_request_decodes_to_what_was_encoded(request_):
    assert decode_request(encode_request(request_)) == request_


def test_answers_decode_typed_and_the_fast_ok_is_an_ok():
    redirect = decode_answer(encode_answer(3, Outcome.REDIRECT, leader=2, leader_addr="127.0.0.1:7002"))
    assert redirect == Answer(id=3, status=Outcome.REDIRECT, leader=2, leader_addr="127.0.0.1:7002")
    assert decode_answer(encode_ok_answer(4)) == Answer(id=4, status=Outcome.OK, result={"ok": True})
    with pytest.raises(RemoteProtocolError, match="status"):
        decode_answer(encode({"t": "resp", "id": 5, "status": "maybe"}))
