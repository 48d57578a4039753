"""A value that is not UTF-8 text is bytes from the client's request to the store
and back: the request decoder accepts it, the log command keeps it, and the state
digest tells it from the same characters as text."""

from __future__ import annotations

from raftproc.kv.commands import Command
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime import codec
from raftproc.runtime.protocol import KvRequest, decode_request

RAW = b"\xff\xfe\x00 not text"


def _request(**fields) -> bytes:
    return codec.encode({"t": "req", "id": 1, "key": "k", "expect": None, "client": 7, "seq": 1, **fields})


def test_set_and_cas_with_bytes_decode_to_the_same_bytes():
    req = decode_request(_request(op="set", value=RAW))
    assert isinstance(req, KvRequest) and req.value == RAW
    cas = decode_request(_request(op="cas", value=b"new", expect=RAW))
    assert isinstance(cas, KvRequest) and (cas.expect, cas.value) == (RAW, b"new")


def test_the_store_keeps_bytes_and_a_cas_compares_them():
    store = KeyValueStore()
    store.apply(1, Command("set", "k", RAW, client=7, seq=1).encode())
    assert store.apply(2, Command("get", "k", client=7, seq=2).encode()) == {"ok": True, "value": RAW}
    assert store.apply(3, Command("cas", "k", b"next", RAW, client=7, seq=3).encode()) == {"ok": True}
    assert store.data["k"] == b"next"
    assert "SET k=b'\\xff" in Command("set", "k", RAW).describe()


def test_the_state_digest_tells_bytes_from_the_same_text():
    as_text, as_bytes = KeyValueStore(), KeyValueStore()
    as_text.apply(1, Command("set", "k", "abc").encode())
    as_bytes.apply(1, Command("set", "k", b"abc").encode())
    assert as_text.state_digest() != as_bytes.state_digest()
