"""The client's outcome classes decide what the linearizability checker sees: a
Failed operation is taken as never applied, an Unknown one as maybe applied. Each
test scripts a fake node on loopback and checks the outcome and how often the
client asked."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from raftproc.client import Client, ClientError, Failed, Misconfigured, Unknown, Unreachable
from raftproc.runtime import codec
from raftproc.runtime.framing import FrameDecoder, encode_frame


class FakeNode:
    """Answers every request with `script(request) -> answer fields`, or closes the
    connection when the script returns None."""

    def __init__(self, script) -> None:
        self.script = script
        self.requests: list[dict] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for frame in decoder.feed(data):
                    req = codec.load_map(frame)
                    self.requests.append(req)
                    fields = self.script(req)
                    if fields is None:
                        return  # close without answering
                    conn.sendall(encode_frame(codec.encode({"t": "resp", "id": req["id"], **fields})))

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join()


@pytest.fixture
def fake():
    nodes = []

    def make(script):
        node = FakeNode(script)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


def client_for(*nodes, timeout=0.6) -> Client:
    """A client with an id of its own, so the scripts see no registration first."""
    return Client({i + 1: n.address for i, n in enumerate(nodes)}, timeout=timeout, attempt_timeout=0.2, max_backoff=0.05, client_id=7)


def test_client_ok_returns_the_result(fake):
    node = fake(lambda req: {"status": "ok", "result": {"ok": True}})
    assert client_for(node).set("k", "v") == {"ok": True}
    assert len(node.requests) == 1


def test_client_error_is_failed_at_once(fake):
    node = fake(lambda req: {"status": "error", "error": "too large"})
    with pytest.raises(Failed, match="too large"):
        client_for(node).set("k", "v")
    assert len(node.requests) == 1


def test_client_no_leader_until_the_deadline_is_failed_and_backs_off(fake):
    node = fake(lambda req: {"status": "no_leader"})
    started = time.monotonic()
    with pytest.raises(Failed):
        client_for(node, timeout=0.5).set("k", "v")
    # 0.5 s of retries with backoff growing to 50 ms: a handful, not thousands.
    assert 3 <= len(node.requests) <= 40
    assert time.monotonic() - started >= 0.5


def test_client_unknown_answer_makes_the_outcome_unknown(fake):
    node = fake(lambda req: {"status": "unknown", "error": "leadership lost before commit"})
    with pytest.raises(Unknown):
        client_for(node).set("k", "v")


def test_client_connection_lost_after_sending_is_unknown(fake):
    node = fake(lambda req: None)
    with pytest.raises(Unknown):
        client_for(node).set("k", "v")
    assert node.requests, "the request reached the node"


def test_client_retries_reuse_the_sequence_number(fake):
    answers = iter([{"status": "unknown"}, {"status": "no_leader"}, {"status": "ok", "result": {"ok": True}}])
    node = fake(lambda req: next(answers))
    assert client_for(node, timeout=2).set("k", "v") == {"ok": True}
    assert [r["seq"] for r in node.requests] == [1, 1, 1]
    assert len({r["id"] for r in node.requests}) == 3


def test_client_follows_a_redirect(fake):
    leader = fake(lambda req: {"status": "ok", "result": {"ok": True}})
    follower = fake(lambda req: {"status": "redirect", "leader": 1, "leader_addr": f"{leader.address[0]}:{leader.address[1]}"})
    c = Client({2: follower.address}, timeout=1, attempt_timeout=0.2, client_id=7)
    assert c.set("k", "v") == {"ok": True}
    assert len(leader.requests) == 1 and c.addresses[1] == leader.address


def test_client_with_every_node_down_backs_off_for_every_operation():
    """Nothing listens: every operation, member and transfer included, waits between
    attempts instead of burning a core until its deadline, then fails."""
    address = _closed_port()
    for run in (lambda c: c.set("k", "v"), lambda c: c.member("list"), lambda c: c.transfer()):
        c = Client({1: address}, timeout=0.5, attempt_timeout=0.2, max_backoff=0.05, client_id=7)
        calls = 0
        real_call = c._call

        def counting_call(*args, real_call=real_call, **kwargs):
            nonlocal calls
            calls += 1
            return real_call(*args, **kwargs)

        c._call = counting_call
        cpu = time.process_time()
        with pytest.raises(Failed):
            run(c)
        assert calls <= 40, f"{calls} attempts in 0.5 s"
        assert time.process_time() - cpu < 0.3


def test_a_retry_is_marked_and_a_forgotten_session_is_unknown_not_failed(fake):
    answers = iter([{"status": "unknown", "error": "leadership lost"}, {"status": "session_expired", "error": "session expired: ..."}])
    node = fake(lambda req: next(answers))
    c = client_for(node, timeout=5)
    with pytest.raises(Unknown, match="session expired"):
        c.set("k", "v")
    first, second = node.requests
    assert "retry" not in first and second["retry"] is True and second["seq"] == first["seq"]
    c.close()


def test_a_redirect_alone_does_not_mark_the_request_a_retry(fake):
    node = fake(lambda req: {"status": "ok", "result": {"ok": True}})
    redirector = fake(lambda req: {"status": "redirect", "leader": 2, "leader_addr": f"{node.address[0]}:{node.address[1]}"})
    c = Client({1: redirector.address, 2: node.address}, timeout=5, attempt_timeout=0.5, max_backoff=0.05, client_id=7)
    c._target = redirector.address
    c.set("k", "v")
    assert "retry" not in node.requests[0], "a follower's redirect proposed nothing: still a first attempt"
    c.close()


def _registering(answers):
    """A node script that issues ids to `register` and answers writes from `answers`."""
    issued = iter(range((1 << 62) + 10, (1 << 62) + 100))

    def script(req):
        if req["op"] == "register":
            return {"status": "ok", "result": {"ok": True, "client": next(issued)}}
        return next(answers)

    return script


def test_a_new_client_registers_once_and_writes_with_the_id_it_was_given(fake):
    node = fake(_registering(iter([{"status": "ok", "result": {"ok": True}}] * 2)))
    c = Client({1: node.address}, timeout=2, attempt_timeout=0.5, max_backoff=0.05)
    c.set("a", "1")
    c.set("b", "2")
    register, first, second = node.requests
    assert register["op"] == "register" and register["client"] == 0
    assert first["client"] == second["client"] == (1 << 62) + 10 and (first["seq"], second["seq"]) == (1, 2)
    c.close()


def test_a_forgotten_registered_session_on_a_first_attempt_registers_again_and_applies(fake):
    """Nothing of a first attempt was applied: a fresh id makes it safe to send again."""
    answers = iter([{"status": "session_expired", "error": "session expired: ..."}, {"status": "ok", "result": {"ok": True}}])
    node = fake(_registering(answers))
    c = Client({1: node.address}, timeout=2, attempt_timeout=0.5, max_backoff=0.05)
    c.set("k", "v")
    kinds = [(r["op"], r["client"], "retry" in r) for r in node.requests]
    assert kinds == [("register", 0, False), ("set", (1 << 62) + 10, False), ("register", 0, False), ("set", (1 << 62) + 11, False)]
    c.close()


def test_a_forgotten_registered_session_on_a_retry_is_unknown(fake):
    answers = iter([{"status": "unknown", "error": "leadership lost"}, {"status": "session_expired", "error": "session expired: ..."}])
    node = fake(_registering(answers))
    c = Client({1: node.address}, timeout=2, attempt_timeout=0.5, max_backoff=0.05)
    with pytest.raises(Unknown, match="session expired"):
        c.set("k", "v")
    c.close()


def test_status_after_the_node_dropped_the_connection_reconnects(fake):
    """A long-lived client must not keep a broken connection for status either."""
    calls = []

    def script(req):
        calls.append(req)
        return None if len(calls) == 2 else {"status": "ok", "result": {"id": 1}}

    node = fake(script)
    c = client_for(node)
    assert c.status(1)["id"] == 1
    with pytest.raises(Unreachable):
        c.status(1)
    assert c.status(1)["id"] == 1 and len(calls) == 3
    c.close()


def _closed_port() -> tuple[str, int]:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()


def test_a_client_failing_fast_names_every_refusing_node_at_once():
    ports = [_closed_port(), _closed_port()]
    c = Client(dict(enumerate(ports, start=1)), timeout=30, client_id=7, fail_fast=True)
    started = time.monotonic()
    with pytest.raises(Unreachable, match="every node refused") as caught:
        c.set("k", "v")
    assert time.monotonic() - started < 5, "named at once, not after the 30 s deadline"
    assert all(f"{host}:{port}" in str(caught.value) for host, port in ports)


def test_a_node_that_closes_a_plaintext_connection_at_once_is_named_as_a_tls_mistake(fake):
    node = fake(lambda req: None)
    c = Client({1: node.address}, timeout=30, client_id=7, fail_fast=True)
    started = time.monotonic()
    with pytest.raises(Misconfigured, match="is it a TLS cluster"):
        c.set("k", "v")
    assert time.monotonic() - started < 5


def test_a_read_that_may_have_reached_a_node_fails_and_is_never_unknown(fake):
    lost = fake(lambda req: None)
    with pytest.raises(ClientError) as caught:
        client_for(lost).get("k")
    assert not isinstance(caught.value, Unknown) and lost.requests
    uncertain = fake(lambda req: {"status": "unknown", "error": "leadership lost"})
    with pytest.raises(Failed):
        client_for(uncertain).get("k", read="log")


def test_a_value_that_is_not_text_travels_as_bytes(fake):
    stored = {}

    def script(req):
        if req["op"] == "set":
            stored[req["key"]] = req["value"]
            return {"status": "ok", "result": {"ok": True}}
        return {"status": "ok", "result": {"ok": True, "value": stored.get(req["key"])}}

    c = client_for(fake(script))
    c.set("k", b"\xff\x00raw")
    assert stored == {"k": b"\xff\x00raw"} and c.get("k") == b"\xff\x00raw"
