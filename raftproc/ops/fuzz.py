"""A seeded fuzzer of a node's ports: mutations of valid frames and commands.

    python -m raftproc.ops.fuzz --config run/config.toml --node 1 --as 4 --frames 1000000 --seed 1

Each frame starts from a valid body (every peer message type after a valid hello
on the peer port; every request type on the client port, a forwarded Redis
command included; a Redis command on the RESP port, `--redis`) and is mutated: bit
flips, truncations, a field's value swapped for another type, a field deleted,
integers far past 64 bits, deep nesting, trailing garbage, or a length prefix
that lies. The node under test must close the offending connection and live on;
the fuzzer reconnects whenever it does. The same seed sends the same frames.

On the peer port the fuzzer claims to be node `--as`, which should be a node of
the configuration that is not running: its hello is then admitted, and the
mutated Raft messages reach the core (and may well disturb the cluster: the peer
port is not authenticated, which the fuzzer does not test).
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

import cbor2

from raftproc.runtime.codec import PROTOCOL_VERSION
from raftproc.runtime.protocol import (
    ClientRequest,
    KvRequest,
    MemberRequest,
    RedisRequest,
    StatusRequest,
    TransferRequest,
    request_body,
)
from raftproc.runtime.resp import encode_command

Address = tuple[str, int]


def peer_bodies(me: int, target: int, incarnation: int) -> list[dict[str, Any]]:
    v, s, d = PROTOCOL_VERSION, me, target
    return [
        {"v": v, "t": "rv", "src": s, "dst": d, "term": 5, "last_log_index": 3, "last_log_term": 2, "pre_vote": False, "transfer": False},
        {"v": v, "t": "rvr", "src": s, "dst": d, "term": 5, "vote_granted": True, "pre_vote": False},
        {
            "v": v,
            "t": "ae",
            "src": s,
            "dst": d,
            "term": 5,
            "prev_log_index": 0,
            "prev_log_term": 0,
            "entries": [[5, 1, b"x"], [5, 2, None, [[1, 2, 3], [], []]]],
            "leader_commit": 0,
            "context": 1,
            "prev_log_hash": bytes(16),
        },
        {
            "v": v,
            "t": "aer",
            "src": s,
            "dst": d,
            "term": 5,
            "success": True,
            "match_index": 2,
            "rejected_index": 0,
            "conflict_term": None,
            "conflict_index": 0,
            "context": 1,
            "diverged": False,
        },
        {"v": v, "t": "tn", "src": s, "dst": d, "term": 5},
        {"v": v, "t": "sc", "src": s, "dst": d, "term": 5, "index": 9, "snap_term": 2, "offset": 0, "total": 3, "data": b"abc"},
        {"v": v, "t": "sa", "src": s, "dst": d, "term": 5, "index": 9, "snap_term": 2, "next_offset": 3, "ok": True},
        {"v": v, "t": "hi", "src": s, "dst": d, "incarnation": incarnation},
    ]


def client_bodies() -> list[dict[str, Any]]:
    """One valid body of each request type, as a client sends it (runtime.protocol)."""
    requests: list[ClientRequest] = [
        StatusRequest(id=1),
        KvRequest(id=2, op="set", key="k", value="v", expect=None, client=7, seq=1, read="log"),
        KvRequest(id=3, op="get", key="k", value=None, expect=None, client=7, seq=2, read="index"),
        KvRequest(id=4, op="cas", key="k", value="w", expect="v", client=7, seq=3, read="log"),
        TransferRequest(id=5, target=None),
        MemberRequest(id=6, op="list"),
        MemberRequest(id=7, op="add", node=9, addresses=(("127.0.0.1", 1), ("127.0.0.1", 2))),
        RedisRequest(id=8, commands=[[b"SET", b"k", b"v"]]),
        RedisRequest(id=9, commands=[[b"INCR", b"n"], [b"MGET", b"k", b"n"]], multi=True),
    ]
    return [{"v": PROTOCOL_VERSION, **request_body(r)} for r in requests]


_ODD_VALUES: list[Any] = [
    -1,
    0,
    2**64,
    10**5000,
    -(10**5000),
    1.5,
    float("nan"),
    True,
    None,
    "",
    "x" * 10_000,
    b"\0" * 100,
    [],
    {},
    [[[]]],
    {"t": "rv"},
    ["tn"],
    "127.0.0.1\0:7",
    "h:99999999999999999999",
]


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def mutate(rng: random.Random, body: dict[str, Any]) -> bytes:
    """One mutated frame, length prefix included."""
    kind = rng.randrange(9)
    b = dict(body)
    if kind == 0:  # a field's value swapped for another type
        b[rng.choice(list(b))] = rng.choice(_ODD_VALUES)
    elif kind == 1:  # a field deleted
        del b[rng.choice(list(b))]
    elif kind == 2:  # a huge integer somewhere
        b[rng.choice(list(b))] = rng.choice((2**64, 2**200, 10**4400)) * rng.choice((1, -1))
    elif kind == 3:  # deep nesting
        b[rng.choice(list(b))] = _nested(rng.choice((50, 399, 401, 5000)))
    data = cbor2.dumps(b) if kind <= 3 else cbor2.dumps(body)
    if kind == 4:  # bit flips
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        data = bytes(buf)
    elif kind == 5:  # truncated
        data = data[: rng.randrange(len(data))]
    elif kind == 6:  # trailing garbage
        data += rng.randbytes(rng.randint(1, 64))
    elif kind == 7:  # a length prefix that lies (the frame then waits for bytes that never come)
        return struct.pack(">I", rng.choice((len(data) + rng.randint(1, 1000), 2**32 - 1, 2**24 + 1))) + data
    # kind 8: the valid body itself, now and then
    return struct.pack(">I", len(data)) + data


REDIS_COMMANDS: list[list[bytes]] = [
    [b"SET", b"k", b"v"],
    [b"GET", b"k"],
    [b"MSET", b"a", b"1", b"b", b"2"],
    [b"INCRBY", b"n", b"5"],
    [b"SCAN", b"0", b"MATCH", b"a*", b"COUNT", b"10"],
    [b"HELLO", b"3", b"SETNAME", b"fuzz"],
    [b"CLIENT", b"SETNAME", b"x"],
    [b"MULTI"],
    [b"EXEC"],
    [b"SET", b"k", b"v", b"NX", b"GET"],
]


def mutate_command(rng: random.Random, argv: list[bytes]) -> tuple[bytes, bool]:
    """One mutated RESP command, and whether it is still whole (else the connection
    is dropped after it: the node may be waiting for the rest)."""
    data = encode_command(argv)
    kind = rng.randrange(8)
    if kind == 0:  # bit flips
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return bytes(buf), False
    if kind == 1:  # truncated
        return data[: rng.randrange(len(data))], False
    if kind == 2:  # a count or a length that lies, or is absurd
        lie = rng.choice((b"*2000000000\r\n", b"*-5\r\n", b"$99999999999\r\n", b"*1\r\n$-3\r\n", b"*99999999999999999999999\r\n"))
        return lie + data, False
    if kind == 3:  # an inline line that never ends
        return b"SET " + rng.randbytes(rng.choice((100, 70_000))), False
    if kind == 4:  # random bytes
        return rng.randbytes(rng.randint(1, 200)), False
    if kind == 5:  # an argument of odd bytes (not UTF-8, NULs, CRLF inside)
        odd = [*argv[:-1], rng.choice((b"\xff\xfe", b"\0" * 10, b"a\r\nb", b"9" * 30))]
        return encode_command(odd), True
    if kind == 6:  # an unknown command or a wrong number of arguments
        return encode_command(rng.choice(([b"FLUSHALL"], argv[:1], [*argv, b"extra"]))), True
    return data, True  # kind 7: the valid command itself


@dataclass
class FuzzStats:
    frames: int = 0
    connections: int = 0
    closed_by_node: int = 0
    seconds: float = 0.0


class _Port:
    """One connection at a time to the port under test, reopened when the node closes it."""

    def __init__(self, address: Address, opening: bytes) -> None:
        self.address = address
        self.opening = opening  # sent first on every connection (the peer hello)
        self.sock: socket.socket | None = None

    def send(self, frame: bytes, stats: FuzzStats) -> None:
        for _ in range(2):
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=5)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                stats.connections += 1
                if self.opening:
                    self.sock.sendall(self.opening)
            try:
                self.sock.sendall(frame)
                self._drain()
                return
            except OSError:
                stats.closed_by_node += 1
                self.close()

    def _drain(self) -> None:
        """Read whatever answers are there; a closed connection shows as OSError."""
        assert self.sock is not None
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionResetError("closed by the node")
        except BlockingIOError:
            pass
        finally:
            if self.sock is not None:
                self.sock.setblocking(True)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def fuzz(
    peer: Address | None, client: Address | None, *, me: int, target: int, frames: int, seed: int, redis: Address | None = None
) -> FuzzStats:
    """Send `frames` mutated frames, alternating between the ports given."""
    rng = random.Random(seed)
    incarnation = rng.getrandbits(62) + 1
    hello = cbor2.dumps(peer_bodies(me, target, incarnation)[-1])
    ports: list[tuple[_Port, list[dict[str, Any]]]] = []
    if peer is not None:
        ports.append((_Port(peer, struct.pack(">I", len(hello)) + hello), peer_bodies(me, target, incarnation)))
    if client is not None:
        ports.append((_Port(client, b""), client_bodies()))
    resp = _Port(redis, b"") if redis is not None else None
    stats = FuzzStats()
    started = time.monotonic()
    try:
        for i in range(frames):
            if resp is not None and i % (len(ports) + 1) == len(ports):
                data, whole = mutate_command(rng, rng.choice(REDIS_COMMANDS))
                resp.send(data, stats)
                if not whole:
                    resp.close()
                stats.frames += 1
                continue
            port, bodies = ports[i % len(ports)]
            frame = mutate(rng, rng.choice(bodies))
            port.send(frame, stats)
            if frame[:4] != struct.pack(">I", len(frame) - 4):
                port.close()  # a lying length prefix: the node waits for the rest; move on
            stats.frames += 1
    finally:
        for port, _ in ports:
            port.close()
        if resp is not None:
            resp.close()
    stats.seconds = time.monotonic() - started
    return stats


def main(argv: list[str] | None = None) -> int:
    from raftproc.config import load_config

    p = argparse.ArgumentParser(prog="python -m raftproc.ops.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--node", type=int, required=True, help="the node to fuzz")
    p.add_argument("--as", dest="me", type=int, required=True, help="the node id to claim on the peer port (one that is not running)")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--redis", action="store_true", help="the node's RESP port too")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    node = cfg.node(args.node)
    redis = node.redis if args.redis else None
    stats = fuzz(node.peer, node.client, me=args.me, target=args.node, frames=args.frames, seed=args.seed, redis=redis)
    print(
        f"{stats.frames} frames over {stats.connections} connections ({stats.closed_by_node} closed by the node) in {stats.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
