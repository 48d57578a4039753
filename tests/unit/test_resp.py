"""RESP requests in, replies out: any split of the bytes parses the same, every
count and length is bounded before anything is allocated, and replies are the
bytes redis-cli and redis-py expect."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftproc.runtime.resp import MAX_INLINE_BYTES, Map, RequestParser, RespError, encode_command, encode_reply

commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(commands, st.lists(st.integers(min_value=1, max_value=50), max_size=30))
def test_any_split_of_the_bytes_gives_the_same_commands(cmds, cuts):
    data = b"".join(encode_command(c) for c in cmds)
    parser, got, pos = RequestParser(1 << 20, 1000), [], 0
    for cut in cuts:
        got += parser.feed(data[pos : pos + cut])
        pos += cut
    got += parser.feed(data[pos:])
    assert got == cmds and parser.buffered == 0


def test_inline_commands_and_empty_lines():
    parser = RequestParser(1 << 20, 1000)
    assert parser.feed(b"PING\r\n\r\nset  x   10\nGET x\r\n") == [[b"PING"], [b"set", b"x", b"10"], [b"GET", b"x"]]


@pytest.mark.parametrize(
    "data, words",
    [
        (b"*2000000000\r\n", "over the limit"),
        (b"*99999999999999999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n$99999999999\r\n", "more than"),
        (b"*1\r\n$-3\r\n", "invalid bulk length"),
        (b"*1\r\n:5\r\n", "expected '[$]'"),
        (b"*1\r\n$3\r\nabcde\r\n", "not followed by CRLF"),
        (b"*" + b"1" * 40, "invalid multibulk length"),
        (b"X" * (MAX_INLINE_BYTES + 1), "too big inline request"),
        (b"*3\r\n$600\r\n" + b"a" * 600 + b"\r\n$600\r\n" + b"b" * 600 + b"\r\n", "more than"),
        (b"*100\r\n" + b"$0\r\n\r\n" * 100, "more than"),  # empty arguments count too
    ],
)
def test_what_breaks_a_bound_is_refused_before_it_is_allocated(data, words):
    parser = RequestParser(1000, 1000)
    got = parser.feed(b"PING\r\n" + data)
    assert got[0] == [b"PING"] and isinstance(got[1], RespError) and len(got) == 2, got  # what came whole first, then the error
    assert re.search(words, str(got[1])), got[1]
    assert parser.feed(b"PING\r\n") == []  # nothing is read after it


def test_a_command_trickling_in_byte_by_byte_is_read_once():
    data = encode_command([b"MSET", *[b"k%d" % i for i in range(2000)]])
    parser = RequestParser(1 << 20, 10_000)
    got = []
    for i in range(len(data)):
        got += parser.feed(data[i : i + 1])
    assert got == [[b"MSET", *[b"k%d" % i for i in range(2000)]]]


def test_replies_in_resp2_and_resp3():
    reply = [1, None, "text", b"\xff", {"status": "OK"}, {"error": "ERR bad\r\nline"}, Map(a=1)]
    assert encode_reply(reply) == b"*7\r\n:1\r\n$-1\r\n$4\r\ntext\r\n$1\r\n\xff\r\n+OK\r\n-ERR bad  line\r\n*2\r\n$1\r\na\r\n:1\r\n"
    assert encode_reply(reply, resp3=True).endswith(b"_\r\n$4\r\ntext\r\n$1\r\n\xff\r\n+OK\r\n-ERR bad  line\r\n%1\r\n$1\r\na\r\n:1\r\n")
