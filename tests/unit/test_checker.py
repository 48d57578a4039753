"""The linearizability checker rejects what it must and accepts what it may."""

from __future__ import annotations

import random
from typing import Any

from raftproc.checker import check_history


def op(client, kind, key, call, ret, *, value=None, expect=None, ok=True, output=None, mismatch=False):
    r = {
        "client": client,
        "op": kind,
        "key": key,
        "value": value,
        "expect": expect,
        "call": call,
        "return": ret,
        "ok": ok,
        "output": output,
    }
    if mismatch:
        r["mismatch"] = True
    return r


def test_checker_accepts_sequential_history():
    h = [
        op(1, "put", "x", 0, 1, value="a"),
        op(1, "get", "x", 2, 3, output="a"),
        op(1, "cas", "x", 4, 5, value="b", expect="a"),
        op(1, "cas", "x", 6, 7, value="c", expect="a", ok=False, mismatch=True, output="b"),
        op(1, "delete", "x", 8, 9),
        op(1, "get", "x", 10, 11, output=None),
    ]
    assert check_history(h).ok


def test_checker_rejects_stale_read():
    h = [
        op(1, "put", "x", 0, 1, value="a"),
        op(1, "put", "x", 2, 3, value="b"),
        op(2, "get", "x", 4, 5, output="a"),
    ]
    result = check_history(h)
    assert not result.ok
    assert result.failures[0].key == "x"
    assert any("get -> 'a'" in line for line in result.failures[0].problem)


def test_checker_rejects_lost_write():
    h = [
        op(1, "put", "x", 0, 1, value="a"),
        op(2, "get", "x", 5, 6, output=None),
    ]
    assert not check_history(h).ok


def test_checker_rejects_phantom_read():
    h = [
        op(1, "put", "x", 0, 1, value="a"),
        op(2, "get", "x", 2, 3, output="never-written"),
    ]
    assert not check_history(h).ok


def test_checker_rejects_read_of_a_write_that_definitely_failed():
    h = [
        op(1, "put", "x", 0, 1, value="a", ok=False),
        op(2, "get", "x", 2, 3, output="a"),
    ]
    assert not check_history(h).ok


def test_checker_accepts_concurrent_overlap_in_either_order():
    h = [
        op(1, "put", "x", 0, 10, value="a"),
        op(2, "put", "x", 1, 9, value="b"),
        op(3, "get", "x", 11, 12, output="a"),
        op(4, "get", "x", 2, 3, output="b"),
    ]
    assert check_history(h).ok


def test_checker_unknown_write_may_land_late_or_never():
    late = [
        op(1, "put", "x", 0, 1, value="a"),
        op(2, "put", "x", 2, None, value="b", ok=None),
        op(3, "get", "x", 10, 11, output="a"),
        op(3, "get", "x", 20, 21, output="b"),
    ]
    never = [
        op(1, "put", "x", 0, 1, value="a"),
        op(2, "put", "x", 2, None, value="b", ok=None),
        op(3, "get", "x", 30, 31, output="a"),
    ]
    assert check_history(late).ok and check_history(never).ok
    flip_flop = late + [op(3, "get", "x", 40, 41, output="a")]
    assert not check_history(flip_flop).ok  # once visible, it cannot vanish


def test_checker_unknown_write_cannot_act_before_its_call():
    h = [
        op(1, "put", "x", 0, 1, value="a"),
        op(3, "get", "x", 2, 3, output="b"),
        op(2, "put", "x", 5, None, value="b", ok=None),
    ]
    assert not check_history(h).ok


def test_checker_keys_are_independent():
    h = [op(1, "put", "x", 0, 1, value="a"), op(1, "put", "y", 2, 3, value="b"), op(2, "get", "x", 4, 5, output="a")]
    assert check_history(h).ok and check_history(h).keys == 2


def linearizable_history(n_ops: int, keys: int, clients: int, seed: int) -> list[dict]:
    """Simulate a correct register per key: each operation takes effect at a random
    instant inside its [call, return] window, applied in instant order."""
    rng = random.Random(seed)
    planned = []
    t = 0
    for i in range(n_ops):
        t += rng.randint(1, 3)
        call = t
        ret = call + rng.randint(1, 25)
        planned.append((call + rng.random() * (ret - call), i, call, ret))
    state: dict[str, str | None] = {}
    out = []
    for _at, i, call, ret in sorted(planned):
        key = f"k{rng.randrange(keys)}"
        client = rng.randrange(clients)
        kind = rng.choice(("put", "get", "get", "delete", "cas"))
        cur = state.get(key)
        if kind == "put":
            state[key] = f"v{i}"
            r = op(client, "put", key, call, ret, value=f"v{i}")
        elif kind == "get":
            r = op(client, "get", key, call, ret, output=cur)
        elif kind == "delete":
            state[key] = None
            r = op(client, "delete", key, call, ret)
        else:
            expect = cur if rng.random() < 0.5 else f"v{rng.randrange(i + 1)}"
            if expect == cur:
                state[key] = f"v{i}"
                r = op(client, "cas", key, call, ret, value=f"v{i}", expect=expect)
            else:
                r = op(client, "cas", key, call, ret, value=f"v{i}", expect=expect, ok=False, mismatch=True, output=cur)
        if rng.random() < 0.03 and kind != "get":
            r["return"], r["ok"] = None, None
        out.append(r)
    return out


def test_checker_accepts_a_large_correct_concurrent_history():
    h = linearizable_history(20_000, keys=200, clients=16, seed=1)
    result = check_history(h)
    assert result.ok, result.summary()
    assert result.operations == 20_000


def test_checker_finds_one_corrupted_read_in_a_large_history():
    h = linearizable_history(5_000, keys=50, clients=8, seed=2)
    reads = [r for r in h if r["op"] == "get" and r["output"] is not None]
    reads[len(reads) // 2]["output"] = "v-phantom"
    result = check_history(h)
    assert not result.ok and len(result.failures) == 1


def test_a_history_file_is_checked_a_key_at_a_time_with_the_same_verdicts(tmp_path, monkeypatch):
    """The streamed form (raftproc.checker.spill) agrees with the in-memory check, and
    its buffers spill to disk as they fill (a tiny bound forces many spills)."""
    import json

    from raftproc.checker import spill
    from raftproc.checker.spill import check_history_file

    monkeypatch.setattr(spill, "SPILL_BYTES", 300)
    good = [op(c, "put", f"k{c % 3}", 10 * c, 10 * c + 5, value=f"v{c}") for c in range(30)]
    good += [op(99, "get", f"k{k}", 1000 + k, 1001 + k, output=f"v{27 + k}") for k in range(3)]
    bad = [*good, op(98, "get", "k0", 2000, 2001, output="v0")]  # a stale read after v27
    for records, ok in ((good, True), (bad, False)):
        path = tmp_path / f"{ok}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in reversed(records)))  # any order
        seen: dict[str, int] = {}

        def count(key: str, records: list[dict[str, Any]], seen: dict[str, int] = seen) -> None:
            seen[key] = len(records)

        result = check_history_file(path, tmp_path / f"scratch-{ok}", visit=count)
        expected = check_history(records)
        assert result.ok is ok is expected.ok and result.operations == expected.operations == len(records)
        assert result.keys == 3 and sum(seen.values()) == len(records)
        assert not list((tmp_path / f"scratch-{ok}").iterdir()), "each key's file is dropped once checked"
