"""The chaos workload's Redis client records what the RESP port says, no more: an
UNKNOWN answer is an unknown outcome, CLUSTERDOWN is a definite failure once time
is up (after trying again), a write cut off after it was sent is unknown."""

from __future__ import annotations

import random
import socket
import threading

import pytest

from raftproc.client import Failed, Unknown
from raftproc.ops.redis_client import RedisKvClient
from raftproc.runtime.resp import Map, RequestParser, encode_reply


CLOSE = object()


def fake_node(answer: object) -> tuple[tuple[str, int], list[bytes]]:
    """A RESP port that answers every command with `answer` (CLOSE: closes instead)."""
    server = socket.create_server(("127.0.0.1", 0))
    heard: list[bytes] = []  # the names of the commands, in order

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            parser, resp3 = RequestParser(1 << 20, 1000), False
            with conn:
                while data := conn.recv(65536):
                    for argv in parser.feed(data):
                        heard.append(argv[0].upper())
                        if argv[0].upper() in (b"HELLO", b"CLIENT"):  # redis-py's handshake
                            if argv[0].upper() == b"HELLO":
                                resp3 = argv[1:2] == [b"3"]
                            reply = Map(proto=3 if resp3 else 2) if argv[0].upper() == b"HELLO" else {"status": "OK"}
                            conn.sendall(encode_reply(reply, resp3=resp3))
                        elif answer is CLOSE:
                            break
                        else:
                            conn.sendall(encode_reply(answer, resp3=resp3))
                    else:
                        continue
                    break

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname(), heard


def client(address, timeout: float = 1.0) -> RedisKvClient:
    return RedisKvClient({1: address}, timeout=timeout, rng=random.Random(1))


def test_unknown_is_unknown_and_not_retried():
    address, heard = fake_node({"error": "UNKNOWN outcome unknown: leadership lost before commit"})
    with pytest.raises(Unknown):
        client(address).set("k", "v")
    assert heard.count(b"SET") == 1


def test_clusterdown_is_tried_again_then_failed():
    address, heard = fake_node({"error": "CLUSTERDOWN no leader: no command was run"})
    with pytest.raises(Failed):
        client(address, timeout=0.5).set("k", "v")
    assert heard.count(b"SET") >= 2


def test_a_write_cut_off_after_it_left_is_unknown_and_a_refused_one_failed():
    address, _ = fake_node(CLOSE)
    with pytest.raises(Unknown):
        client(address).set("k", "v")
    s = socket.create_server(("127.0.0.1", 0))
    nobody = s.getsockname()
    s.close()
    with pytest.raises(Failed):
        client(nobody, timeout=0.3).set("k", "v")


def test_set_nx_get_is_a_cas_on_an_absent_key():
    address, _ = fake_node(b"old")
    assert client(address).cas("k", None, "new") == {"ok": False, "mismatch": True, "value": "old"}
    address, _ = fake_node(None)
    assert client(address).cas("k", None, "new") == {"ok": True}
