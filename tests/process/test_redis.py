"""The RESP port as Redis users meet it: redis-py for every command, its errors,
pipelines and MULTI/EXEC; redis-cli and redis-benchmark from Debian's redis-tools;
through the leader and through followers, in RESP2 and RESP3, over TLS."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import make_cluster

from raftproc.ops.cluster import Cluster

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("redis"), 3)
    c.up(wait=20)
    yield c
    c.down(timeout=3)


def connect(cluster: Cluster, node: int, **kw) -> redis.Redis:
    host, port = cluster.config.node(node).redis
    return redis.Redis(host=host, port=port, socket_timeout=15, retry=None, **kw)


def follower(cluster: Cluster) -> int:
    leader = cluster.wait_for_leader(timeout=15)
    return next(n for n in cluster.config.nodes if n != leader)


@pytest.fixture(params=["leader", "follower"])
def r(request, cluster) -> Iterator[redis.Redis]:
    """A client of the leader, or of a follower (which forwards every command)."""
    node = cluster.wait_for_leader(timeout=15) if request.param == "leader" else follower(cluster)
    client = connect(cluster, node)
    yield client
    client.close()


def fresh(kind: str) -> str:
    """A key prefix no other test (or parameter) uses: they share one cluster."""
    return f"{kind}{uuid.uuid4().hex[:8]}:"


def test_strings_counters_and_many_keys(r):
    k = fresh("t")
    assert r.set(k + "x", "10") is True
    assert r.get(k + "x") == b"10"
    assert r.incr(k + "x") == 11 and r.incrby(k + "x", 9) == 20 and r.decr(k + "x") == 19 and r.decrby(k + "x", 4) == 15
    assert r.set(k + "x", "v", nx=True) is None and r.get(k + "x") == b"15"
    assert r.set(k + "y", "v", xx=True) is None and r.get(k + "y") is None
    assert r.set(k + "x", "new", get=True) == b"15"
    assert r.setnx(k + "x", "no") is False and r.setnx(k + "z", "yes") is True
    assert r.getset(k + "z", "again") == b"yes"
    assert r.mset({k + "a": "1", k + "b": b"\xff\x00bytes"}) is True
    assert r.mget([k + "a", k + "b", k + "none"]) == [b"1", b"\xff\x00bytes", None]
    assert r.msetnx({k + "a": "2", k + "c": "3"}) is False and r.get(k + "c") is None
    assert r.msetnx({k + "c": "3", k + "d": "4"}) is True
    assert r.append(k + "a", "23") == 3 and r.strlen(k + "a") == 3 and r.strlen(k + "b") == 7
    assert r.exists(k + "a", k + "a", k + "none") == 2
    assert r.delete(k + "a", k + "none") == 1 and r.unlink(k + "c", k + "d") == 2
    assert r.client_id() >= 1
    assert r.ttl(k + "x") == -1 and r.ttl(k + "none") == -2 and r.type(k + "x") == b"string"
    assert r.dbsize() >= 3
    assert r.ping() is True and r.echo("hi") == b"hi"


def test_scan_and_keys_take_a_prefix(r):
    k = fresh("s")
    r.mset({f"{k}{i:03}": str(i) for i in range(250)})
    found = set(r.scan_iter(match=k + "*", count=37))
    assert found == {f"{k}{i:03}".encode() for i in range(250)}
    assert sorted(r.keys(k + "1*")) == sorted(f"{k}{i:03}".encode() for i in range(100, 200))
    assert r.keys(k + "007") == [f"{k}007".encode()]
    with pytest.raises(redis.ResponseError, match="prefix"):
        r.keys(k + "?")


def test_errors_read_as_redis_writes_them(r):
    r.set("text", "abc")
    cases = [
        (lambda: r.incr("text"), "value is not an integer or out of range"),
        (lambda: r.incrby("text", 1), "value is not an integer"),
        (lambda: (r.set("big", str(2**63 - 1)), r.incr("big")), "increment or decrement would overflow"),
        (lambda: r.execute_command("NOSUCH", "a"), "unknown command 'NOSUCH'"),
        (lambda: r.execute_command("GET"), "wrong number of arguments for 'get' command"),
        (lambda: r.execute_command("SET", "a", "b", "BOGUS"), "syntax error"),
        (lambda: r.set("e", "1", ex=10), "do not expire: SET with EX"),
        (lambda: r.expire("e", 10), "do not expire: EXPIRE"),
        (lambda: r.execute_command("SELECT", "1"), "DB index is out of range"),
        (lambda: r.execute_command("GET", b"\xff"), "UTF-8"),
    ]
    for call, words in cases:
        with pytest.raises(redis.ResponseError, match=words):
            call()
    assert r.execute_command("SELECT", "0") is True and r.get("text") == b"abc"


def test_a_pipeline_is_answered_in_the_order_asked(r):
    k = fresh("p")
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"{k}{i}", i)
        pipe.incr(k + "n")
        pipe.get(f"{k}{i}")
        pipe.ping()
    replies = pipe.execute(raise_on_error=False)
    for i in range(300):
        assert replies[4 * i : 4 * i + 4] == [True, i + 1, str(i).encode(), True]


def test_multi_exec_applies_the_whole_block_or_none_of_it(r):
    k = fresh("m")
    pipe = r.pipeline(transaction=True)
    pipe.set(k + "a", 1).incr(k + "a").mget([k + "a", k + "none"]).incr(k + "text-later")
    assert pipe.execute() == [True, 2, [b"2", None], 1]
    # A queuing error discards the whole block: nothing of it is applied.
    pipe = r.pipeline(transaction=True)
    pipe.set(k + "b", 1).execute_command("NOSUCH")
    with pytest.raises(redis.ResponseError, match="unknown command 'NOSUCH'"):  # redis-py names the queuing error
        pipe.execute()
    assert r.get(k + "b") is None
    # A runtime error inside the block answers that command, as in Redis.
    r.set(k + "t", "abc")
    assert r.pipeline(transaction=True).incr(k + "t").set(k + "c", 1).execute(raise_on_error=False)[1] is True
    with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
        r.execute_command("EXEC")


def test_no_reader_ever_sees_half_a_block(cluster):
    """Writers move a and b together in MULTI blocks; readers through every node
    read both with MGET and must always find them equal."""
    nodes = list(cluster.config.nodes)
    connect(cluster, nodes[0]).mset({"pair:a": 0, "pair:b": 0})
    stop, seen, errors = threading.Event(), [], []

    def write(node: int) -> None:
        c = connect(cluster, node)
        for _ in range(60):
            c.pipeline(transaction=True).incr("pair:a").incr("pair:b").execute()
        c.close()

    def read(node: int) -> None:
        c = connect(cluster, node)
        while not stop.is_set() and len(seen) < 5000:
            a, b = c.mget(["pair:a", "pair:b"])
            seen.append((a, b))
            if a != b:
                errors.append((node, a, b))
        c.close()

    readers = [threading.Thread(target=read, args=(n,)) for n in nodes]
    writers = [threading.Thread(target=write, args=(n,)) for n in nodes]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=30)
    assert not errors, errors[:5]
    assert connect(cluster, nodes[1]).mget(["pair:a", "pair:b"]) == [b"180", b"180"]
    assert len(seen) > 10


def test_resp3_after_hello_3(cluster):
    c = connect(cluster, follower(cluster), protocol=3)
    assert c.set("r3", "v") is True and c.get("r3") == b"v" and c.get("r3-none") is None
    hello = c.execute_command("HELLO", "3")
    assert hello[b"proto"] == 3 and hello[b"server"] == b"redis"
    assert c.client_setname("tester") is True and c.client_getname() == b"tester"
    assert {_text(k): _text(v) for k, v in c.config_get("appendonly").items()} == {"appendonly": "yes"}
    c.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_command_describes_the_commands_for_clients_that_ask(cluster):
    c = connect(cluster, follower(cluster))
    table = c.command()  # redis-py reads COMMAND into a dict by name
    assert c.command_count() == len(table) >= 30
    assert table["get"]["arity"] == 2 and table["get"]["flags"] == ["readonly"]
    assert table["mset"]["arity"] == -3 and (table["mset"]["first_key_pos"], table["mset"]["step_count"]) == (1, 2)
    assert c.command_list() and c.execute_command("COMMAND DOCS") in ([], {})  # no docs: redis-cli uses its own hints
    c.close()


def test_info_tells_the_raft_state(cluster):
    leader = cluster.wait_for_leader(timeout=15)
    info = connect(cluster, follower(cluster)).info()
    assert info["raft_role"] == "follower" and info["raft_leader_id"] == leader and info["raft_term"] >= 1
    assert info["raft_commit_index"] >= 1 and "raft_last_applied" in info
    assert connect(cluster, leader).info("replication")["role"] == "master"


def redis_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian's redis-tools; scripts/test installs it as root)")
    return path


def cli(cluster: Cluster, node: int, *args: str, extra: tuple[str, ...] = ()) -> str:
    host, port = cluster.config.node(node).redis
    out = subprocess.run([redis_tool("redis-cli"), "-h", host, "-p", str(port), *extra, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_redis_cli_sets_and_gets_through_any_node(cluster):
    nodes = list(cluster.config.nodes)
    assert cli(cluster, nodes[0], "set", "cli-x", "10") == "OK"
    assert [cli(cluster, n, "get", "cli-x") for n in nodes] == ["10"] * len(nodes)
    assert cli(cluster, nodes[2], "incr", "cli-x") == "11"
    assert cli(cluster, nodes[1], "--no-raw", "mget", "cli-x", "nope") == '1) "11"\n2) (nil)'
    assert "ERR unknown command" in cli(cluster, nodes[1], "flushall")


def test_redis_benchmark_finishes_with_no_error_reply(cluster):
    """redis-benchmark 7 stops at the first error reply: every request of every test must succeed."""
    host, port = cluster.config.node(follower(cluster)).redis
    cmd = [redis_tool("redis-benchmark"), "-h", host, "-p", str(port), "-t", "set,get,incr,mset", "-P", "16", "-n", "100000", "-q"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finals = [line.split("\r")[-1] for line in out.stdout.splitlines() if "requests per second" in line]
    assert out.returncode == 0 and "rror" not in out.stdout + out.stderr, (out.stdout[-2000:], out.stderr[-2000:])
    assert [f.split(":")[0].strip() for f in finals] == ["SET", "GET", "INCR", "MSET (10 keys)"], finals
    cluster.wait_converged(timeout=30)


def test_no_leader_is_clusterdown_and_nothing_is_run(tmp_path):
    cluster = make_cluster(tmp_path, 3)
    try:
        cluster.up(wait=20)
        leader = cluster.wait_for_leader(timeout=15)
        survivor = next(n for n in cluster.config.nodes if n != leader)
        connect(cluster, survivor).set("before", "1")
        for n in cluster.config.nodes:
            if n != survivor:
                cluster.kill(n)
        c = connect(cluster, survivor)
        with pytest.raises(redis.exceptions.ClusterDownError, match="no leader.*not run"):
            c.set("after", "1")
        with pytest.raises(redis.exceptions.ClusterDownError, match="no leader"):
            c.get("before")
        assert c.ping() is True  # the connection's own business needs no leader
        for n in cluster.config.nodes:
            if n != survivor:
                cluster.start(n)
        cluster.wait_for_leader(timeout=20)
        assert connect(cluster, survivor).mget(["before", "after"]) == [b"1", None]
    finally:
        cluster.down(timeout=3)


def test_without_forwarding_a_follower_answers_moved_and_redis_cli_c_follows_it_over_tls(tmp_path):
    cluster = make_cluster(tmp_path, 3, tls=True, redis_forward=False)
    try:
        cluster.up(wait=20)
        leader = cluster.wait_for_leader(timeout=15)
        other = next(n for n in cluster.config.nodes if n != leader)
        tls = cluster.config.tls
        assert tls is not None and tls.client_cert and tls.client_key
        files = ("--tls", "--cacert", str(tls.ca), "--cert", str(tls.client_cert), "--key", str(tls.client_key))
        host, port = cluster.config.node(leader).redis
        assert cli(cluster, other, "set", "tls-x", "1", extra=files) == f"MOVED 0 {host}:{port}"
        assert cli(cluster, other, "set", "tls-x", "2", extra=("-c", *files)) == "OK"
        assert cli(cluster, leader, "get", "tls-x", extra=files) == "2"
        # Without a certificate the handshake fails: nothing is served in plaintext.
        host, port = cluster.config.node(other).redis
        out = subprocess.run([redis_tool("redis-cli"), "-h", host, "-p", str(port), "ping"], capture_output=True, text=True, timeout=30)
        assert "PONG" not in out.stdout
    finally:
        cluster.down(timeout=3)


def test_protocol_errors_close_one_connection_and_are_answered(cluster):
    import socket

    host, port = cluster.config.node(1).redis
    for bad, words in ((b"*2000000000\r\n", b"arguments is over the limit"), (b"*1\r\n$-3\r\n", b"invalid bulk length")):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(bad)
            answer = b""
            while not answer.endswith(b"\r\n"):
                chunk = s.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"-ERR Protocol error") and words in answer, answer
            assert s.recv(4096) == b""  # closed after the answer
    assert connect(cluster, 1).ping() is True


def test_readme_commands_exist(cluster):
    """The README's two redis-cli lines, as written there, against this cluster's node 1."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "redis-cli -p 7401 set x 10" in readme and "redis-cli -p 7401 get x" in readme
    assert cli(cluster, 1, "set", "x", "10") == "OK" and cli(cluster, 1, "get", "x") == "10"


def test_over_tls_a_follower_forwards_with_its_node_certificate_and_only_clients_are_served(tmp_path):
    cluster = make_cluster(tmp_path, 3, tls=True)
    try:
        cluster.up(wait=20)
        other = follower(cluster)
        tls, tls_dir = cluster.config.tls, cluster.tls_dir
        assert tls is not None

        def over_tls(cert: Path, key: Path) -> redis.Redis:
            return connect(cluster, other, ssl=True, ssl_ca_certs=str(tls.ca), ssl_certfile=str(cert), ssl_keyfile=str(key))

        c = over_tls(tls.client_cert, tls.client_key)  # type: ignore[arg-type]
        assert c.set("tls-fwd", "1") is True and c.incr("tls-fwd") == 2
        assert c.pipeline(transaction=True).incr("tls-fwd").get("tls-fwd").execute() == [3, b"3"]
        node_cert = over_tls(tls_dir / f"node-{other}.pem", tls_dir / f"node-{other}-key.pem")
        with pytest.raises(redis.ConnectionError):
            node_cert.ping()
    finally:
        cluster.down(timeout=3)


def _raw_exchange(address, data: bytes, replies: int, timeout: float = 20.0) -> tuple[list[bytes], bool]:
    """Send `data`; read until `replies` RESP lines start a reply or the node closes. Returns
    the first line of each reply and whether the node closed the connection."""
    import socket

    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while True:
            lines = [line for line in buf.split(b"\r\n")[:-1] if line[:1] in (b"+", b"-", b":")]
            if len(lines) >= replies:
                return lines, False
            chunk = s.recv(65536)
            if not chunk:
                return [line for line in buf.split(b"\r\n") if line[:1] in (b"+", b"-", b":")], True
            buf += chunk


def test_a_bad_command_costs_nothing_but_an_error(cluster):
    """SELECT --1 (which once raised in the handler and ended the node), an unknown
    subcommand, odd numbers: each an error reply; the node and the connection live on."""
    c = connect(cluster, 1)
    for args in (("SELECT", "--1"), ("SELECT", "99999999999999999999999"), ("HELLO", "--3"), ("CLIENT", "NOSUCH"), ("COMMAND", "x")):
        with pytest.raises(redis.ResponseError):
            c.execute_command(*args)
    assert c.ping() is True and all(p.state == "running" for p in cluster.processes())


def test_a_protocol_error_is_answered_after_what_came_before_it(cluster):
    """A write, then garbage: the write is answered +OK first, then the error, then the
    connection closes (a client must never take the error for the write's answer)."""
    from raftproc.runtime.resp import encode_command

    address = cluster.config.node(follower(cluster)).redis
    lines, closed = _raw_exchange(address, encode_command([b"SET", b"pe", b"1"]) + b"*x\r\n", 2)
    assert lines[0] == b"+OK" and lines[1].startswith(b"-ERR Protocol error") and len(lines) == 2, lines
    assert connect(cluster, 1).get("pe") == b"1"


def test_a_multi_block_over_max_request_bytes_is_refused_whole(cluster):
    big = b"v" * (1 << 20)
    c = connect(cluster, follower(cluster))
    pipe = c.pipeline(transaction=True)
    for i in range(3):
        pipe.set(f"mb{i}", big)
    with pytest.raises(redis.ResponseError, match="max_request_bytes"):
        pipe.execute()
    assert c.exists("mb0", "mb1", "mb2") == 0
    leader = cluster.wait_for_leader(timeout=15)
    assert [s["term"] for s in cluster.status_table() if s.get("term")] and cluster.leader() == leader  # nobody was deposed


def test_a_pipeline_runs_in_the_order_sent(r):
    """Redis runs a connection's commands in order: each GET sees the SET just before
    it and no later one, each INCR's count is one more than the last."""
    k = fresh("o")
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(k, i).get(k).incr(k + "n").get(k + "n")
    replies = pipe.execute()
    for i in range(200):
        assert replies[4 * i : 4 * i + 4] == [True, str(i).encode(), i + 1, str(i + 1).encode()], (i, replies[4 * i : 4 * i + 4])


def test_a_forwarded_command_to_a_leader_that_stopped_answering_gets_an_honest_answer_in_time(tmp_path):
    """The leader is paused (SIGSTOP): a write sent through a follower before a new
    leader is known must not hang; it is answered, at worst as unknown, within seconds."""
    cluster = make_cluster(tmp_path, 3)
    try:
        cluster.up(wait=20)
        leader = cluster.wait_for_leader(timeout=15)
        other = next(n for n in cluster.config.nodes if n != leader)
        c = connect(cluster, other)
        assert c.set("before-pause", 1) is True
        cluster.pause(leader)
        started = time.monotonic()
        try:
            answered = c.set("during-pause", 1)
        except redis.ResponseError as e:
            answered = str(e)
        took = time.monotonic() - started
        assert took < 14, (took, answered)
        assert answered is True or "outcome unknown" in str(answered) or "no leader" in str(answered), answered
        cluster.resume(leader)
    finally:
        cluster.down(timeout=3)
