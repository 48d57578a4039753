"""The write path's own CBOR (raftproc.kv.cbor) against cbor2: whatever it reads it
reads as cbor2 does, whatever it writes is cbor2's bytes, and everything else it
hands to cbor2 (Unhandled). These call its functions directly, so the pure run of
the suite proves the logic and the compiled run proves the compiled code."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftproc.core.membership import Membership
from raftproc.core.messages import AppendEntries, Entry
from raftproc.kv import cbor, commands
from raftproc.kv.cbor import Unhandled
from raftproc.kv.commands import Command
from raftproc.runtime import codec, entries, protocol
from raftproc.runtime.codec import RemoteProtocolError, encode_message
from raftproc.runtime.protocol import KvRequest, encode_request

EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
ints = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1), st.integers(-(2**64), -1))
scalars = st.one_of(ints, st.text(max_size=300), st.binary(max_size=300), st.booleans(), st.none())
flat_maps = st.dictionaries(st.text(max_size=30), scalars, max_size=12)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (True == 1, and b"" != "")."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def mutations(data: bytes, draw: st.DataObject) -> list[bytes]:
    """The bytes cut short, with a byte changed, and with a byte put in."""
    out = [data[: draw.draw(st.integers(0, max(0, len(data) - 1)))]]
    if data:
        i = draw.draw(st.integers(0, len(data) - 1))
        out.append(data[:i] + bytes([draw.draw(st.integers(0, 255))]) + data[i + 1 :])
    i = draw.draw(st.integers(0, len(data)))
    out.append(data[:i] + bytes([draw.draw(st.integers(0, 255))]) + data[i:])
    return out


def flat_map(data: bytes) -> dict[str, Any]:
    """A whole frame that is a map of scalars, read with map_prefix."""
    r = cbor.Reader(data)
    body, rest, _ = cbor.map_prefix(r)
    if rest is not None or r.pos != len(data):
        raise Unhandled
    return body


def agrees_or_hands_over(fast: Any, slow: Any, data: bytes) -> None:
    """fast(data) either raises Unhandled or gives what slow(data) gives."""
    try:
        got = fast(data)
    except Unhandled:
        return
    assert same(got, slow(data)), f"{data.hex()}: {got!r}"


@given(flat_maps)
def test_a_flat_map_reads_as_cbor2_reads_it(body):
    assert same(flat_map(cbor2.dumps(body)), body)


@settings(max_examples=300)
@given(flat_maps, st.data())
def test_broken_maps_are_read_as_cbor2_reads_them_or_handed_over(body, data):
    for broken in mutations(cbor2.dumps(body), data):
        agrees_or_hands_over(flat_map, cbor2.loads, broken)


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("a161611805"),  # 5 in two bytes
        bytes.fromhex("a1616179000161"),  # a text's length in three bytes
        bytes.fromhex("a161618101"),  # an array value
        bytes.fromhex("a16161c101"),  # a tag
        bytes.fromhex("a16161f93c00"),  # a float
        bytes.fromhex("bf616101ff"),  # an indefinite map
        bytes.fromhex("a1616162c328"),  # invalid UTF-8
        bytes.fromhex("a161610100"),  # trailing bytes
        bytes.fromhex("a1016101"),  # an integer key
        bytes.fromhex("ba00010000"),  # a count beyond the bytes there are
    ],
)
def test_what_it_does_not_read_goes_to_cbor2(data):
    with pytest.raises(Unhandled):
        flat_map(data)


@given(ints.filter(lambda n: n >= 0), st.text(max_size=300), st.one_of(st.text(max_size=300), st.binary(max_size=300), st.none()))
def test_written_items_are_cbor2s_bytes(n, text, value):
    for put, item in ((cbor.put_uint, n), (cbor.put_text, text), (cbor.put_text_bytes_or_null, value)):
        out: list[bytes] = []
        put(out, item)  # type: ignore[operator]
        assert b"".join(out) == cbor2.dumps(item)


def test_numbers_beyond_64_bits_go_to_cbor2():
    for n in (2**64, -1):
        with pytest.raises(Unhandled):
            cbor.put_uint([], n)


commands_ = st.builds(
    Command,
    st.sampled_from(["set", "get", "del", "cas", "register"]),
    st.text(max_size=50),
    st.one_of(st.text(max_size=400), st.binary(max_size=400), st.none()),
    st.one_of(st.text(max_size=20), st.binary(max_size=20), st.none()),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)


def encoded_by_cbor2(cmd: Command) -> bytes:
    return cbor2.dumps([cmd.op, cmd.key, cmd.value, cmd.expect, cmd.client, cmd.seq])


@given(commands_)
def test_a_command_is_written_and_read_as_cbor2_would(cmd):
    data = commands._encode_plain(cmd)
    assert data == encoded_by_cbor2(cmd) == cmd.encode()
    decoded = commands._decode_plain(data)
    assert (decoded.op, decoded.key, decoded.value, decoded.expect, decoded.client, decoded.seq) == (
        cmd.op,
        cmd.key,
        cmd.value,
        cmd.expect,
        cmd.client,
        cmd.seq,
    )
    assert [type(decoded.value), type(decoded.expect)] == [type(cmd.value), type(cmd.expect)]
    assert not decoded.retry and not decoded.trace


def fields(cmd: Command) -> tuple[Any, ...]:
    return (cmd.op, cmd.key, cmd.value, cmd.expect, cmd.client, cmd.seq, cmd.retry, cmd.trace)


@settings(max_examples=300)
@given(commands_, st.data())
def test_broken_commands_are_read_as_cbor2_reads_them_or_handed_over(cmd, data):
    def slow(raw: bytes) -> tuple[Any, ...]:
        f = cbor2.loads(raw)
        return fields(Command(f[0], f[1], f[2], f[3], f[4], f[5]))

    for broken in mutations(encoded_by_cbor2(cmd), data):
        agrees_or_hands_over(lambda raw: fields(commands._decode_plain(raw)), slow, broken)


def test_retries_and_traced_commands_keep_their_longer_form():
    for cmd in (Command("set", "k", "v", None, 1, 2, retry=True), Command("set", "k", "v", None, 1, 2, trace=True)):
        with pytest.raises(Unhandled):
            commands._decode_plain(cmd.encode())
        assert fields(Command.decode(cmd.encode())) == fields(cmd)


entry_runs = st.lists(st.one_of(st.binary(max_size=100), st.none()), max_size=30)


@given(entry_runs, st.integers(1, 2**40))
def test_an_append_is_read_as_cbor2_reads_it_and_its_entry_bytes_kept(commands_in_run, term):
    run = tuple(Entry(term, 100 + i, c) for i, c in enumerate(commands_in_run))
    msg = AppendEntries(
        src=1, dst=2, term=term, prev_log_index=99, prev_log_term=term, entries=run, leader_commit=7, prev_log_hash=b"h" * 16
    )
    wire = encode_message(msg)
    body = codec._load_append(wire)
    assert body is not None
    slow = codec.load_map(wire)
    assert body.keys() == slow.keys()
    assert body["entries"] == tuple(codec._decode_entries(slow["entries"]))
    if run:
        kept = entries.entries_cbor(body["entries"])
        assert kept == wire[len(wire) - len(kept) :] == cbor2.dumps([[e.term, e.index, e.command] for e in run])
        # A part of the run (what a follower writes when it held the rest already) is
        # encoded afresh, not taken from the bytes kept.
        part = body["entries"][1:]
        assert entries.entries_cbor(part) == cbor2.dumps([[e.term, e.index, e.command] for e in part])


@settings(max_examples=300)
@given(entry_runs, st.data())
def test_broken_appends_are_read_as_cbor2_reads_them_or_handed_over(commands_in_run, data):
    run = tuple(Entry(5, 100 + i, c) for i, c in enumerate(commands_in_run))
    wire = encode_message(AppendEntries(src=1, dst=2, term=5, prev_log_index=99, prev_log_term=5, entries=run, leader_commit=7))

    def fast(raw: bytes) -> dict[str, Any]:
        body = codec._load_append(raw)
        if body is None:
            raise Unhandled
        run = body.get("entries")
        return {**body, "entries": [[e.term, e.index, e.command] for e in run]} if isinstance(run, tuple) else body

    for broken in mutations(wire, data):
        agrees_or_hands_over(fast, cbor2.loads, broken)


@given(entry_runs, st.integers(0, 2**64 - 1))
def test_a_run_of_entries_is_written_as_cbor2_writes_it(commands_in_run, term):
    run = tuple(Entry(term, i, c) for i, c in enumerate(commands_in_run))
    assert entries._plain_run(run) == cbor2.dumps([[e.term, e.index, e.command] for e in run])


def test_configuration_entries_are_read_and_written_by_cbor2():
    assert entries._plain_run((Entry(5, 100, b"x", Membership((1, 2, 3))),)) is None
    run = (Entry(5, 100, b"addresses", Membership((1, 2, 3))),)
    wire = encode_message(AppendEntries(src=1, dst=2, term=5, prev_log_index=99, prev_log_term=5, entries=run, leader_commit=7))
    assert codec._load_append(wire) is None
    assert codec.decode_message(wire).entries == run  # type: ignore[union-attr]


anything = st.one_of(scalars, st.lists(st.integers(), max_size=2))
valid_requests = st.builds(
    lambda op, key, value, expect, client, seq, read, request_id: {
        "v": 2,
        "t": "req",
        "id": request_id,
        "op": op,
        "key": key,
        "value": value,
        "expect": expect,
        "client": client,
        "seq": seq,
        **({"read": read} if op == "get" and read else {}),
    },
    st.sampled_from(["set", "get", "del", "cas"]),
    st.text(max_size=20),
    st.one_of(st.text(max_size=20), st.binary(max_size=20), st.text(min_size=200, max_size=400)),
    st.one_of(st.text(max_size=20), st.binary(max_size=20), st.none()),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.sampled_from([None, "log", "index", "lease"]),
    st.integers(0, 2**64 - 1),
)
OPTIONAL = ["read", "retry", "trace", "after", "limit", "vv"]


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    """A valid request, then maybe a field or two changed, dropped or added."""
    body = draw(valid_requests)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(sorted(body) + OPTIONAL))
        if draw(st.booleans()) and name in body:
            del body[name]
        else:
            body[name] = draw(st.one_of(anything, st.sampled_from(["set", "register", "log", "index", "req", 2, "k" * 4097])))
    return body


def read_generally(data: bytes) -> Any:
    try:
        return protocol._decode_any(data)
    except RemoteProtocolError:
        return None


@given(valid_requests)
def test_a_plain_write_is_read_as_the_general_way_reads_it(body):
    data = cbor2.dumps(body)
    assert protocol._plain_write(data) == read_generally(data) is not None


@settings(max_examples=500)
@given(requests())
def test_a_changed_write_is_read_as_the_general_way_reads_it_or_left_to_it(body):
    data = cbor2.dumps(body)
    fast = protocol._plain_write(data)
    if fast is not None:
        assert fast == read_generally(data), body


@settings(max_examples=300)
@given(requests(), st.data())
def test_broken_writes_are_read_as_the_general_way_reads_them_or_left_to_it(body, data):
    for broken in mutations(cbor2.dumps(body), data):
        fast = protocol._plain_write(broken)
        if fast is not None:
            assert fast == read_generally(broken), broken.hex()


def test_the_requests_clients_send_take_the_plain_way():
    for req in (
        KvRequest(id=7, op="set", key="k", value="v" * 64, expect=None, client=3, seq=1, read="log"),
        KvRequest(id=2**64 - 1, op="cas", key="k", value=b"\xff", expect="old", client=2**40, seq=2**33, read="log"),
        KvRequest(id=8, op="del", key="k", value=None, expect=None, client=3, seq=2, read="log"),
        KvRequest(id=9, op="get", key="k", value=None, expect=None, client=3, seq=3, read="log"),
        KvRequest(id=9, op="get", key="k", value=None, expect=None, client=3, seq=3, read="lease"),
    ):
        assert protocol._plain_write(encode_request(req)) == req == protocol._decode_any(encode_request(req))
    retry = KvRequest(id=7, op="set", key="k", value="v", expect=None, client=3, seq=1, read="log", retry=True)
    assert protocol._plain_write(encode_request(retry)) is None


@pytest.mark.parametrize(
    "change",
    [
        {"key": "k" * 4097},  # one character over MAX_KEY_CHARS
        {"key": "é" * 4097},
        {"value": None},
        {"op": "register"},
        {"read": "index"},  # only a get says how it reads
        {"t": "reqs"},
        {"v": 1},
        {"seq": -1},
        {"client": True},
    ],
)
def test_what_the_general_way_refuses_the_plain_way_leaves_to_it(change):
    body = {"v": 2, "t": "req", "id": 1, "op": "set", "key": "k", "value": "v", "expect": None, "client": 1, "seq": 1, **change}
    assert protocol._plain_write(cbor2.dumps(body)) is None
    assert read_generally(cbor2.dumps(body)) is None


def test_the_longest_key_takes_the_plain_way():
    body = {"v": 2, "t": "req", "id": 1, "op": "set", "key": "é" * 4096, "value": "v", "expect": None, "client": 1, "seq": 1}
    assert protocol._plain_write(cbor2.dumps(body)) == read_generally(cbor2.dumps(body)) is not None
