from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftproc.core import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Membership,
    RequestVote,
    RequestVoteResponse,
)
from raftproc.core.messages import TimeoutNow
from raftproc.core.ready import HardState, Ready
from raftproc.runtime import codec
from raftproc.runtime.codec import (
    RemoteProtocolError,
    decode_answer,
    decode_message,
    encode,
    encode_message,
    encode_ok_answer,
)
from raftproc.runtime.entries import encode_entry, entries_cbor
from raftproc.runtime.framing import FrameDecoder, FrameError, encode_frame
from raftproc.runtime.identity import PeerHello, PeerRefused
from raftproc.runtime.protocol import (
    KvRequest,
    MemberRequest,
    StatusRequest,
    TransferRequest,
    decode_request,
)
from raftproc.runtime.transfer import SnapshotAck, SnapshotChunk
from raftproc.runtime.wal import encode_record

MESSAGES = [
    RequestVote(src=1, dst=2, term=3, last_log_index=9, last_log_term=2),
    RequestVoteResponse(src=2, dst=1, term=3, vote_granted=True),
    AppendEntries(src=1, dst=3, term=4, prev_log_index=5, prev_log_term=3, entries=(Entry(4, 6, b"x"), Entry(4, 7, None)), leader_commit=5),
    AppendEntriesResponse(src=3, dst=1, term=4, success=False, rejected_index=5, conflict_term=None, conflict_index=3),
    AppendEntriesResponse(src=3, dst=1, term=4, success=True, match_index=7),
    AppendEntries(
        src=1,
        dst=3,
        term=4,
        prev_log_index=5,
        prev_log_term=3,
        leader_commit=5,
        entries=(
            Entry(4, 6, b"addresses", Membership((1, 2, 4), outgoing=(1, 2, 3), learners=(5,))),
            Entry(4, 7, None, Membership((1, 2))),
        ),
    ),
    TimeoutNow(src=1, dst=2, term=9),
    SnapshotChunk(src=1, dst=2, term=3, index=40, snap_term=2, offset=0, total=3, data=b"abc"),
    SnapshotAck(src=2, dst=1, term=3, index=40, snap_term=2, next_offset=3, ok=True),
    PeerHello(1, 2, 2**63),
    PeerRefused(2, 1, "node 1 came back with other data"),
]


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_framing_survives_any_split_and_merge(bodies, data):
    stream = b"".join(encode_frame(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder(max_frame=1000)
    out, last = [], 0
    for cut in cuts + [len(stream)]:
        out += dec.feed(stream[last:cut])
        last = cut
    assert out == bodies and dec.buffered == 0


def test_framing_refuses_oversized_frame_from_the_header_alone():
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameError):
        dec.feed(b"\xff\xff\xff\xff")


@pytest.mark.parametrize("msg", MESSAGES)
def test_codec_round_trip(msg):
    assert decode_message(encode_message(msg)) == msg


def test_codec_round_trips_cover_every_message_type():
    assert set(codec._TAGS) <= {type(m) for m in MESSAGES}


def test_codec_refuses_integers_past_64_bits_and_unhashable_tags():
    base = {"v": 2, "t": "tn", "src": 1, "dst": 2, "term": 1}
    for bad in (
        {**base, "term": 2**64},
        {**base, "term": 10**5000},
        {**base, "t": ["tn"]},
        {**base, "t": {"x": 1}},
        {**base, "v": 10**5000},
    ):
        with pytest.raises(RemoteProtocolError):
            decode_message(cbor2.dumps(bad))


REQUESTS = [
    ({"t": "status", "id": 1}, StatusRequest(id=1)),
    ({"t": "status", "id": 1, "state": True}, StatusRequest(id=1, state=True)),
    ({"t": "transfer", "id": 2, "target": None}, TransferRequest(id=2, target=None)),
    ({"t": "transfer", "id": 3, "target": 4}, TransferRequest(id=3, target=4)),
    ({"t": "member", "id": 4, "op": "list"}, MemberRequest(id=4, op="list")),
    ({"t": "member", "id": 5, "op": "remove", "node": 3}, MemberRequest(id=5, op="remove", node=3)),
    (
        {"t": "member", "id": 6, "op": "add", "node": 6, "addresses": ["h:1", "h:2"]},
        MemberRequest(id=6, op="add", node=6, addresses=(("h", 1), ("h", 2))),
    ),
    (
        {"t": "req", "id": 7, "op": "get", "key": "k", "value": None, "expect": None, "client": 9, "seq": 1, "read": "index"},
        KvRequest(id=7, op="get", key="k", value=None, expect=None, client=9, seq=1, read="index"),
    ),
    (
        {"t": "req", "id": 8, "op": "cas", "key": "k", "value": "b", "expect": "a", "client": 9, "seq": 2},
        KvRequest(id=8, op="cas", key="k", value="b", expect="a", client=9, seq=2, read="log"),
    ),
]


@pytest.mark.parametrize("body,expected", REQUESTS)
def test_client_requests_decode_to_their_typed_request(body, expected):
    assert decode_request(encode(body)) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\x00garbage",
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps({"v": 2, "t": "nope"}),
        cbor2.dumps({"v": 99, "t": "rv", "src": 1, "dst": 2, "term": 1, "last_log_index": 0, "last_log_term": 0}),
        cbor2.dumps({"v": 2, "t": "rv", "src": 1, "dst": 2, "term": 1}),
        cbor2.dumps({"v": 2, "t": "rv", "src": 1, "dst": 2, "term": -1, "last_log_index": 0, "last_log_term": 0}),
        cbor2.dumps({"v": 2, "t": "rvr", "src": 1, "dst": 2, "term": 1, "vote_granted": 1}),
        cbor2.dumps(
            {
                "v": 2,
                "t": "ae",
                "src": 1,
                "dst": 2,
                "term": 1,
                "prev_log_index": 0,
                "prev_log_term": 0,
                "entries": [[1, 5, b"x"]],
                "leader_commit": 0,
            }
        ),
        cbor2.dumps(
            {
                "v": 2,
                "t": "ae",
                "src": 1,
                "dst": 2,
                "term": 1,
                "prev_log_index": 0,
                "prev_log_term": 0,
                "entries": [[9, 1, b"x"]],
                "leader_commit": 0,
            }
        ),
        cbor2.dumps(
            {"v": 2, "t": "ae", "src": 1, "dst": 2, "term": 1, "prev_log_index": 0, "prev_log_term": 0, "entries": "x", "leader_commit": 0}
        ),
        # configuration entries: a voter that is also a learner, node id 0, not a configuration
        cbor2.dumps(
            {
                "v": 2,
                "t": "ae",
                "src": 1,
                "dst": 2,
                "term": 1,
                "prev_log_index": 0,
                "prev_log_term": 0,
                "entries": [[1, 1, None, [[1], [], [1]]]],
                "leader_commit": 0,
            }
        ),
        cbor2.dumps(
            {
                "v": 2,
                "t": "ae",
                "src": 1,
                "dst": 2,
                "term": 1,
                "prev_log_index": 0,
                "prev_log_term": 0,
                "entries": [[1, 1, None, [[0], [], []]]],
                "leader_commit": 0,
            }
        ),
        cbor2.dumps(
            {
                "v": 2,
                "t": "ae",
                "src": 1,
                "dst": 2,
                "term": 1,
                "prev_log_index": 0,
                "prev_log_term": 0,
                "entries": [[1, 1, None, "x"]],
                "leader_commit": 0,
            }
        ),
        # the version before configuration entries
        cbor2.dumps({"v": 1, "t": "rv", "src": 1, "dst": 2, "term": 1, "last_log_index": 0, "last_log_term": 0}),
    ],
)
def test_codec_rejects_malformed_bodies_with_remote_protocol_error(body):
    with pytest.raises(RemoteProtocolError):
        decode_message(body)


@given(st.binary(max_size=200))
def test_codec_never_raises_anything_but_remote_protocol_error(blob):
    for decode in (decode_message, decode_request):
        try:
            decode(blob)
        except RemoteProtocolError:
            pass


def test_client_request_validation():
    ok = {"t": "req", "id": 1, "op": "cas", "key": "k", "value": "v", "expect": None, "client": 5, "seq": 1}
    assert decode_request(encode(ok)).op == "cas"
    for bad in ({**ok, "op": "drop"}, {**ok, "key": 3}, {**ok, "value": None}, {**ok, "client": "x"}, {**ok, "id": -1}):
        with pytest.raises(RemoteProtocolError):
            decode_request(encode(bad))


def test_member_request_validation():
    add = {"t": "member", "id": 1, "op": "add", "node": 6, "addresses": ["127.0.0.1:7106", "127.0.0.1:7206"]}
    assert decode_request(encode(add)).addresses == (("127.0.0.1", 7106), ("127.0.0.1", 7206))
    assert decode_request(encode({"t": "member", "id": 2, "op": "list"})).op == "list"
    for bad in (
        {**add, "op": "grow"},
        {**add, "node": 0},
        {**add, "node": "6"},
        {**add, "addresses": ["127.0.0.1:7106"]},
        {**add, "addresses": ["127.0.0.1:7106", "nowhere"]},
        {"t": "member", "id": 3, "op": "remove"},
    ):
        with pytest.raises(RemoteProtocolError):
            decode_request(encode(bad))


@pytest.mark.parametrize("request_id", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_the_ok_answer_template_is_the_encoded_map(request_id):
    """The leader's byte template for a plain ok answers exactly what encoding the map would."""
    assert encode_ok_answer(request_id) == encode({"t": "resp", "id": request_id, "status": "ok", "result": {"ok": True}})
    assert decode_answer(encode_ok_answer(request_id)) == {"v": 2, "t": "resp", "id": request_id, "status": "ok", "result": {"ok": True}}


def test_a_status_state_flag_must_be_a_bool():
    with pytest.raises(RemoteProtocolError):
        decode_request(encode({"t": "status", "id": 1, "state": 1}))


def test_a_peer_from_before_the_chain_sends_no_link_and_no_divergence_flag():
    """A rolling upgrade: an older node's AppendEntries and answers lack the fields
    added since; they read as "no link" and "not diverged"."""
    import cbor2

    from raftproc.core.messages import AppendEntries, AppendEntriesResponse
    from raftproc.runtime.codec import PROTOCOL_VERSION, decode_message

    ae = {
        "v": PROTOCOL_VERSION,
        "t": "ae",
        "src": 1,
        "dst": 2,
        "term": 3,
        "prev_log_index": 0,
        "prev_log_term": 0,
        "entries": [],
        "leader_commit": 0,
        "context": 0,
    }
    aer = {
        "v": PROTOCOL_VERSION,
        "t": "aer",
        "src": 2,
        "dst": 1,
        "term": 3,
        "success": True,
        "match_index": 0,
        "rejected_index": 0,
        "conflict_term": None,
        "conflict_index": 0,
        "context": 0,
    }
    old_ae, old_aer = decode_message(cbor2.dumps(ae)), decode_message(cbor2.dumps(aer))
    assert isinstance(old_ae, AppendEntries) and old_ae.prev_log_hash is None
    assert isinstance(old_aer, AppendEntriesResponse) and old_aer.diverged is False
    for bad in (b"short", 7, "text"):
        with pytest.raises(RemoteProtocolError, match="16-byte hash"):
            decode_message(cbor2.dumps({**ae, "prev_log_hash": bad}))


@pytest.mark.parametrize("count", [0, 1, 24, 300])
def test_entries_encoded_once_are_the_bytes_cbor2_would_make(count):
    """AppendEntries and WAL records splice in the entries' array, made once for the
    WAL and every follower: the result must be what encoding the whole map gives."""
    entries = tuple(
        Entry(3, 10 + i, None if i % 7 == 0 else b"x" * (i % 5), Membership((1, 2, 3), (), ()) if i == 5 else None)
        for i in range(count)
    )
    msg = AppendEntries(src=1, dst=2, term=3, prev_log_index=9, prev_log_term=3, entries=entries, leader_commit=8, prev_log_hash=b"h" * 16)
    wire = encode_message(msg)
    assert cbor2.loads(wire)["entries"] == [encode_entry(e) for e in entries]
    assert decode_message(wire) == msg
    assert encode_message(msg) == wire, "a second encoding (from the kept bytes) differs"
    record = encode_record(Ready(hard_state=HardState(3, 1, 8), entries=entries))
    assert cbor2.loads(record[8:]) == {"hs": [3, 1, 8], "e": [encode_entry(e) for e in entries]}


def test_a_run_is_encoded_afresh_unless_it_is_the_same_run():
    """The kept run is reused only for the same first and last entry objects and the
    same length: a run cut shorter, or new entries at the same indexes after a
    truncation, are encoded afresh."""
    a, b, c = Entry(2, 7, b"a"), Entry(2, 8, b"b"), Entry(2, 9, b"c")
    assert cbor2.loads(entries_cbor((a, b, c))) == [[2, 7, b"a"], [2, 8, b"b"], [2, 9, b"c"]]
    assert cbor2.loads(entries_cbor((a, b))) == [[2, 7, b"a"], [2, 8, b"b"]]
    b2, c2 = Entry(3, 8, b"B"), Entry(3, 9, b"C")
    assert cbor2.loads(entries_cbor((a, b2, c2))) == [[2, 7, b"a"], [3, 8, b"B"], [3, 9, b"C"]]
    assert cbor2.loads(entries_cbor((a, b2, c2))) == [[2, 7, b"a"], [3, 8, b"B"], [3, 9, b"C"]]
