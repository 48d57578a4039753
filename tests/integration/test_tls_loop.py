"""TLS under our own selectors loop: frames of every size cross a non-blocking
handshake and partial SSL writes in order; bytes already decrypted inside the SSL
object are drained (select() cannot see them); a connection that never finishes
its handshake is closed at the deadline; a plaintext peer gets nothing; and a
certificate's URI SAN names its holder, or nobody."""

from __future__ import annotations

import datetime
import socket
import ssl
from pathlib import Path

import pytest
from support import run_loop_until

from raftproc.ops.certs import make_ca, make_cert
from raftproc.runtime import loop as loop_module
from raftproc.runtime.framing import encode_frame
from raftproc.runtime.loop import Connection, EventLoop, Listener
from raftproc.runtime.tls import ADMIN, CLIENT, Identity, TlsContexts, TlsFiles, client_context, identity_of, node_identity, server_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    make_cert(d, node_identity(1), hosts=("127.0.0.1",))
    make_cert(d, node_identity(2))
    make_cert(d, Identity(CLIENT, "alice"))
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    make_cert(d, Identity(CLIENT, "old"), not_before=past - datetime.timedelta(days=30), not_after=past)
    return d


def files(d: Path, stem: str) -> TlsFiles:
    return TlsFiles(d / "ca.pem", d / f"{stem}.pem", d / f"{stem}-key.pem")


class Ends:
    """A listener on node 1's certificate and one connection dialled to it, in one loop."""

    def __init__(self, pki: Path, client_stem: str = "node-2", *, handshake_timeout: float = 5.0, clock=None) -> None:
        self.loop = EventLoop(clock) if clock else EventLoop()
        self.server_ctx = TlsContexts(files(pki, "node-1"))
        self.client_ctx = client_context(files(pki, client_stem))
        self.got_server: list[bytes] = []
        self.got_client: list[bytes] = []
        self.closed: list[str] = []
        self.events: list[str] = []
        self.server_conns: list[Connection] = []
        self.listener = Listener(self.loop, ("127.0.0.1", 0), self._accept)
        self.handshake_timeout = handshake_timeout

    def log(self, event: str, **fields) -> None:
        self.events.append(event)

    def _accept(self, sock: socket.socket, addr) -> None:
        self.server_conns.append(
            Connection(
                self.loop,
                sock,
                name="server",
                on_frame=lambda c, b: self.got_server.append(b),
                on_close=lambda c, r: self.closed.append(f"server: {r}"),
                max_frame=8 << 20,
                max_buffer=64 << 20,
                log=self.log,
                tls=self.server_ctx.server,
                server_side=True,
                handshake_timeout=self.handshake_timeout,
            )
        )

    def dial(self) -> Connection:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(self.listener.sock.getsockname())
        except BlockingIOError:
            pass
        return Connection(
            self.loop,
            sock,
            name="client",
            on_frame=lambda c, b: self.got_client.append(b),
            on_close=lambda c, r: self.closed.append(f"client: {r}"),
            max_frame=8 << 20,
            max_buffer=64 << 20,
            log=self.log,
            connecting=True,
            tls=self.client_ctx,
            handshake_timeout=self.handshake_timeout,
        )

    def run_until(self, condition, timeout: float = 20.0) -> None:
        run_loop_until(self.loop, condition, timeout)


def test_frames_of_every_size_cross_tls_in_order_both_ways(pki):
    ends = Ends(pki)
    client = ends.dial()
    frames = [bytes([i % 251]) * size for i, size in enumerate([0, 1, 100, 16_383, 16_384, 16_385, 70_000, 1 << 20, 3 << 20, 5, 5])]
    for f in frames:
        assert client.send(f)
    ends.run_until(lambda: len(ends.got_server) == len(frames))
    assert ends.got_server == frames and not ends.closed
    assert client.identity == node_identity(1) and ends.server_conns[0].identity == node_identity(2)
    server = ends.server_conns[0]
    for f in reversed(frames):
        server.send(f)
    ends.run_until(lambda: len(ends.got_client) == len(frames))
    assert ends.got_client == list(reversed(frames))
    ends.loop.close()


def test_decrypted_bytes_held_in_the_ssl_object_are_drained(pki, monkeypatch):
    # One recv takes 1,000 bytes of a 16 KiB record; the rest sits inside the SSL
    # object, where select() never reports it. Without draining pending(), the one
    # frame below would wait for bytes that never come.
    monkeypatch.setattr(loop_module, "RECV_BYTES", 1000)
    ends = Ends(pki)
    client = ends.dial()
    client.send(b"z" * 15_000)
    ends.run_until(lambda: ends.got_server)
    assert ends.got_server == [b"z" * 15_000]
    ends.loop.close()


def test_a_handshake_that_never_finishes_is_closed_at_its_deadline(pki):
    now = [0.0]
    ends = Ends(pki, handshake_timeout=2.0, clock=lambda: now[0])
    silent = socket.create_connection(ends.listener.sock.getsockname())  # TCP, then nothing
    ends.run_until(lambda: ends.server_conns)
    ends.loop.run_once(max_wait=0.01)
    assert not ends.closed
    now[0] = 2.5
    ends.run_until(lambda: ends.closed)
    assert ends.closed == ["server: TLS handshake timed out"] and "tls_handshake_timeout" in ends.events
    silent.settimeout(5)
    assert silent.recv(100) == b"", "closed without a byte of answer"
    ends.loop.close()


def test_plaintext_on_a_tls_port_gets_no_answer(pki):
    ends = Ends(pki)
    plain = socket.create_connection(ends.listener.sock.getsockname())
    plain.sendall(encode_frame(b"\xa2atfstatusbid\x01"))
    ends.run_until(lambda: ends.closed)
    assert ends.closed == ["server: TLS handshake failed"] and not ends.got_server
    plain.settimeout(5)
    try:
        answer = plain.recv(100)
    except ConnectionResetError:
        answer = b""
    assert answer == b"" or answer[0] == 0x15, f"a TLS alert at most, never a frame: {answer[:20]!r}"
    ends.loop.close()


@pytest.mark.parametrize("stem, why", [("client-old", "expired"), (None, "no certificate")])
def test_a_client_without_a_valid_certificate_is_refused(pki, stem, why):
    ends = Ends(pki)
    if stem is None:
        ends.client_ctx = client_context(TlsFiles(pki / "ca.pem", None, None))
    else:
        ends.client_ctx = client_context(files(pki, stem))
    client = ends.dial()
    client.send(b"hello")
    ends.run_until(lambda: any(c.startswith("server") for c in ends.closed))
    assert not ends.got_server, why
    assert "tls_handshake_failed" in ends.events
    ends.loop.close()


def test_a_node_refuses_a_server_from_another_ca(pki, tmp_path):
    make_ca(tmp_path)
    make_cert(tmp_path, node_identity(1))
    ends = Ends(pki)
    ends.server_ctx = TlsContexts(files(tmp_path, "node-1"))  # a rogue node 1, signed by another CA
    client = ends.dial()
    client.send(b"vote for me")
    ends.run_until(lambda: any(c.startswith("client") for c in ends.closed))
    assert not ends.got_server
    ends.loop.close()


def test_rotated_files_take_effect_for_new_connections_only(pki, tmp_path):
    d = tmp_path
    make_ca(d)
    (d / "ca.pem").write_bytes((d / "ca.pem").read_bytes() + (pki / "ca.pem").read_bytes())  # trust both CAs
    for stem in ("node-1", "node-1-key"):
        (d / f"{stem}.pem").write_bytes((pki / f"{stem}.pem").read_bytes())
    ctx = TlsContexts(files(d, "node-1"))
    before = ctx.server
    make_cert(d, node_identity(1))  # a new certificate from the new CA, same paths
    assert ctx.server is before
    ctx.reload()
    assert ctx.server is not before
    (d / "node-1-key.pem").write_text("garbage")
    with pytest.raises(Exception):
        ctx.reload()
    assert ctx.server is not before, "a failed reload keeps the contexts it had"


@pytest.mark.parametrize(
    "sans, expected",
    [
        ((("URI", "raftproc://node/3"),), node_identity(3)),
        ((("URI", "raftproc://admin/ops"), ("DNS", "x")), Identity(ADMIN, "ops")),
        ((("URI", "raftproc://node/3"), ("URI", "raftproc://node/4")), None),  # one holder per certificate
        ((("URI", "raftproc://node/03"),), None),
        ((("URI", "raftproc://node/0"),), None),
        ((("URI", "raftproc://node/" + "9" * 30),), None),
        ((("URI", "raftproc://root/1"),), None),
        ((("URI", "raftproc://client/" + "a" * 65),), None),
        ((("DNS", "node-3"),), None),
    ],
)
def test_identity_of_a_certificate(sans, expected):
    assert identity_of({"subjectAltName": sans}) == expected


def test_contexts_speak_tls_1_3_only(pki):
    for ctx in (server_context(files(pki, "node-1")), client_context(files(pki, "node-2"))):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.verify_mode == ssl.CERT_REQUIRED
