"""Redis's data commands on the key-value store: replicas that apply the same log
agree, SCAN keeps Redis's promise while keys come and go, and errors are Redis's."""

from __future__ import annotations

import random

import cbor2

from raftproc.kv import redis
from raftproc.kv.commands import Command
from raftproc.kv.state_machine import KeyValueStore


def run(store: KeyValueStore, *words: str | bytes):
    return redis.execute(store, [w.encode() if isinstance(w, str) else w for w in words])


def random_block(rng: random.Random) -> list[list[bytes]]:
    key = lambda: b"k%d" % rng.randrange(20)  # noqa: E731
    choices = [
        lambda: [b"SET", key(), rng.choice([b"1", b"x", b"\xff"])],
        lambda: [b"INCRBY", key(), str(rng.randrange(-5, 5)).encode()],
        lambda: [b"APPEND", key(), b"z"],
        lambda: [b"DEL", key(), key()],
        lambda: [b"MSETNX", key(), b"1", key(), b"2"],
        lambda: [b"SET", key(), b"v", b"NX", b"GET"],
        lambda: [b"GETSET", key(), b"7"],
        lambda: [b"MGET", key(), key()],
    ]
    return [rng.choice(choices)() for _ in range(rng.randint(1, 4))]


def test_replicas_applying_the_same_entries_agree_on_state_and_replies():
    rng = random.Random(7)
    log = [Command("redis", "", cbor2.dumps(random_block(rng))).encode() for _ in range(500)]
    stores = [KeyValueStore(), KeyValueStore()]
    replies = [[s.apply(i + 1, entry) for i, entry in enumerate(log)] for s in stores]
    assert replies[0] == replies[1]
    assert stores[0].state_digest() == stores[1].state_digest()
    assert any(redis.is_error(r) for result in replies[0] if result for r in result["redis"])


def test_a_malformed_entry_changes_nothing_on_any_replica():
    store = KeyValueStore()
    assert store.apply(1, Command("redis", "", b"\xff\x00").encode())["ok"] is False
    assert store.apply(2, Command("redis", "", cbor2.dumps([["SET", "k", "v"]])).encode())["ok"] is False  # text, not bytes
    assert store.data == {}


def test_scan_returns_every_key_present_throughout_while_others_come_and_go():
    rng = random.Random(3)
    store = KeyValueStore()
    stable = {f"stable{i}" for i in range(300)}
    for k in stable:
        store.put(k, "v")
    seen: list[str] = []
    cursor = "0"
    while True:
        cursor, keys = run(store, "SCAN", cursor, "COUNT", "17")
        seen += keys
        for _ in range(10):  # churn between calls
            if rng.random() < 0.5:
                store.put(f"churn{rng.randrange(500)}", "v")
            else:
                store.delete(f"churn{rng.randrange(500)}")
        if cursor == "0":
            break
    assert stable <= set(seen)


def test_counters_follow_redis_rules():
    store = KeyValueStore()
    assert run(store, "INCR", "n") == 1 and run(store, "DECRBY", "n", "11") == -10
    assert run(store, "INCRBY", "n", "+1") == redis.NOT_INTEGER  # string2ll takes no plus sign
    assert run(store, "INCRBY", "n", "01") == redis.NOT_INTEGER
    run(store, "SET", "n", str(2**63 - 1))
    assert run(store, "INCR", "n") == redis.OVERFLOW and run(store, "GET", "n") == str(2**63 - 1)
    run(store, "SET", "t", " 1")
    assert run(store, "INCR", "t") == redis.NOT_INTEGER


def test_checks_answer_as_redis_does_before_anything_runs():
    assert redis.check([b"GET"]) == redis.error("ERR wrong number of arguments for 'get' command")
    assert redis.check([b"MSET", b"a"]) == redis.error("ERR wrong number of arguments for 'mset' command")
    assert redis.check([b"MSET", b"a", b"1", b"b"]) == redis.error("ERR wrong number of arguments for 'mset' command")
    assert "unknown command 'HGET'" in redis.check([b"HGET", b"h", b"f"])["error"]
    assert "EXPIRE is not supported" in redis.check([b"expire", b"k", b"1"])["error"]
    assert "SET with PX" in redis.check([b"SET", b"k", b"v", b"px", b"5"])["error"]
    assert redis.check([b"SET", b"k", b"v", b"NX", b"XX"]) == redis.SYNTAX
    assert "UTF-8" in redis.check([b"SET", b"\xff", b"v"])["error"]
    assert "4096" in redis.check([b"GET", b"k" * 5000])["error"]
    assert "invalid cursor" in redis.check([b"SCAN", b"-1"])["error"]
    assert isinstance(redis.check([b"set", b"k", b"v", b"get"]), redis.Spec)


def test_no_request_makes_a_reply_of_gigabytes():
    store = KeyValueStore()
    big = b"v" * (1 << 20)
    for i in range(6):
        run(store, "SET", f"big{i}", big)
    text = big.decode()  # kept as text: it is UTF-8
    assert run(store, "MGET", *[f"big{i}" for i in range(3)]) == [text] * 3
    assert run(store, "MGET", *[f"big{i}" for i in range(6)]) == redis.TOO_LARGE
    block = [[b"GET", b"big%d" % i] for i in range(6)] + [[b"SET", b"after", b"1"]]
    replies = redis.execute_all(store, block)
    assert replies[:4] == [text] * 4 and replies[4:6] == [redis.TOO_LARGE] * 2
    assert replies[6] == redis.OK and store.data["after"] == "1"  # a write's reply says what was done


def test_append_stops_at_the_longest_value_and_a_writes_reply_in_a_block_is_kept():
    store = KeyValueStore()
    chunk = b"a" * (1 << 20)
    assert [run(store, "APPEND", "v", chunk) for _ in range(4)][-1] == 4 << 20
    assert "exceeds maximum allowed size" in run(store, "APPEND", "v", b"x")["error"]
    assert len(store.data["v"]) == 4 << 20
    replies = redis.execute_all(store, [[b"GET", b"v"], [b"GETSET", b"v", b"new"], [b"GET", b"v"]])
    assert replies[1] == "a" * (4 << 20) and replies[2] == redis.TOO_LARGE  # GETSET wrote: its reply says what it replaced
