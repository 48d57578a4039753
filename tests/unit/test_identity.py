"""Node identity and peer incarnations (raftproc.runtime.identity)."""

from __future__ import annotations

import random

import cbor2
import pytest

from raftproc.core.messages import RequestVote
from raftproc.runtime.codec import RemoteProtocolError, decode_message, encode_message
from raftproc.runtime.identity import IdentityError, KnownPeers, PeerHello, PeerRefused, load_identity


def test_identity_is_made_once_and_kept(tmp_path):
    first = load_identity(tmp_path, 3, rng=random.Random(1))
    assert first > 0
    assert load_identity(tmp_path, 3, rng=random.Random(2)) == first
    # A wiped directory is a new incarnation.
    (tmp_path / "identity").unlink()
    assert load_identity(tmp_path, 3, rng=random.Random(2)) != first


def test_identity_of_another_node_or_garbage_is_refused(tmp_path):
    load_identity(tmp_path, 1)
    with pytest.raises(IdentityError, match="holds node 1's data, not node 2's"):
        load_identity(tmp_path, 2)
    (tmp_path / "identity").write_bytes(b"\xff\x00garbage")
    with pytest.raises(IdentityError, match="unreadable"):
        load_identity(tmp_path, 1)
    (tmp_path / "identity").write_bytes(cbor2.dumps({"node": 1, "incarnation": "x"}))
    with pytest.raises(IdentityError, match="not a node identity"):
        load_identity(tmp_path, 1)


def test_known_peers_admit_the_first_incarnation_and_refuse_another(tmp_path):
    known = KnownPeers(tmp_path)
    assert known.admit(2, 111) is None
    assert known.admit(2, 111) is None
    refusal = known.admit(2, 222)
    assert refusal is not None and "node 2 came back with other data" in refusal and "rebuild" in refusal
    assert "111" not in refusal, "a refusal must not tell the caller the incarnation that would be admitted"
    assert known.admit(3, 333) is None
    # Kept across a restart: the record was written before admit() returned.
    again = KnownPeers(tmp_path)
    assert again.seen == {2: 111, 3: 333}
    assert again.admit(2, 222) is not None and again.admit(3, 333) is None
    assert not (tmp_path / "peers.tmp").exists()


def test_known_peers_file_of_the_wrong_shape_is_refused(tmp_path):
    (tmp_path / "peers").write_bytes(cbor2.dumps({"2": 111}))
    with pytest.raises(IdentityError, match="not a table"):
        KnownPeers(tmp_path)


def test_hello_round_trips_and_is_checked():
    hello = PeerHello(1, 2, 2**62)
    assert decode_message(encode_message(hello)) == hello
    with pytest.raises(RemoteProtocolError):
        decode_message(cbor2.dumps({"v": 2, "t": "hi", "src": 1, "dst": 2, "incarnation": -1}))
    with pytest.raises(RemoteProtocolError):
        decode_message(cbor2.dumps({"v": 2, "t": "hi", "src": 1, "dst": 2}))
    assert isinstance(decode_message(encode_message(RequestVote(src=1, dst=2, term=3, last_log_index=4, last_log_term=5))), RequestVote)


def test_refusal_round_trips_and_its_reason_must_be_text():
    refused = PeerRefused(2, 3, "node 3 came back with other data")
    assert decode_message(encode_message(refused)) == refused
    with pytest.raises(RemoteProtocolError, match="not text"):
        decode_message(cbor2.dumps({"v": 2, "t": "no", "src": 2, "dst": 3, "reason": b"bytes"}))
