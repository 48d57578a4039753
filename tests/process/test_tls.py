"""Mutual TLS on real processes (`supervisor up --tls`, as Cluster.create(tls=True)):
plaintext and certificate-less clients get no answer on either port; a client
certificate cannot say hello as a node, a node certificate cannot say hello as
another node, and a forged RequestVote behind either changes no term; the CLI with
the run's config sets and gets; without the admin certificate membership changes
are refused; private keys and the identity files are the owner's alone; a
connection that never finishes its handshake is closed; SIGHUP rotates a node's
certificate for new connections while open ones carry on."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import log_events, make_cluster
from support import wait_until

from raftproc.core.messages import RequestVote
from raftproc.ops.certs import make_cert
from raftproc.runtime import codec
from raftproc.runtime.codec import encode_message
from raftproc.runtime.framing import FrameDecoder, encode_frame
from raftproc.runtime.identity import PeerHello
from raftproc.runtime.tls import CLIENT, Identity, TlsFiles, client_context, node_identity

pytestmark = pytest.mark.process

HANDSHAKE_MS = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = make_cluster(tmp_path_factory.mktemp("tls"), 3, tls=True, handshake_timeout_ms=HANDSHAKE_MS)
    c.up(wait=20)
    yield c
    c.down(timeout=3)


def _pki(cluster) -> Path:
    return cluster.tls_dir


def _files(cluster, stem: str | None) -> TlsFiles:
    d = _pki(cluster)
    if stem is None:
        return TlsFiles(d / "ca.pem", None, None)
    return TlsFiles(d / "ca.pem", d / f"{stem}.pem", d / f"{stem}-key.pem")


def _exchange(sock: socket.socket, frames: list[bytes], timeout: float = 10.0) -> list[bytes]:
    """Send `frames`, then read until the node closes the connection: the frames it
    answered with. A node that ignores us but keeps the connection fails the test."""
    sock.settimeout(timeout)
    got: list[bytes] = []
    decoder = FrameDecoder()
    try:
        for f in frames:
            sock.sendall(encode_frame(f))
        while True:
            data = sock.recv(65536)
            if not data:
                return got
            got += decoder.feed(data)
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return got
    finally:
        sock.close()


def _tls_connect(address, files: TlsFiles) -> ssl.SSLSocket:
    raw = socket.create_connection(address, timeout=10)
    return client_context(files).wrap_socket(raw)


def _terms(cluster) -> dict[int, int]:
    return {n: wait_until(lambda n=n: cluster.node_status(n), 10, f"node {n} status")["term"] for n in cluster.config.nodes}


STATUS = codec.encode({"t": "status", "id": 1})


def test_cli_with_the_runs_config_sets_and_gets(cluster):
    cli = [sys.executable, "-m", "raftproc.client", "--config", str(cluster.config_path)]
    assert subprocess.run([*cli, "set", "greeting", "hello"], capture_output=True, text=True, timeout=30).stdout.strip() == "OK"
    got = subprocess.run([*cli, "get", "greeting"], capture_output=True, text=True, timeout=30)
    assert got.returncode == 0 and got.stdout.strip() == "hello"


def test_plaintext_frames_get_no_answer_on_either_port(cluster):
    for n, node in cluster.config.nodes.items():
        hello = encode_message(PeerHello(2 if n != 2 else 1, n, 1))
        for address, frame in ((node.client, STATUS), (node.peer, hello)):
            assert _exchange(socket.create_connection(address, timeout=10), [frame]) == [], f"node {n} answered plaintext on {address}"


def test_a_tls_client_without_a_certificate_gets_no_answer(cluster):
    for node in cluster.config.nodes.values():
        for address in (node.client, node.peer):
            try:
                sock = _tls_connect(address, _files(cluster, None))
            except (ssl.SSLError, ConnectionResetError):
                continue  # refused inside the handshake: no answer either
            assert _exchange(sock, [STATUS]) == []


def test_an_expired_certificate_gets_no_answer(cluster, tmp_path):
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    cert, key = make_cert(
        tmp_path, Identity(CLIENT, "expired"), ca_dir=_pki(cluster), not_before=past - datetime.timedelta(days=10), not_after=past
    )
    node = cluster.config.node(1)
    try:
        sock = _tls_connect(node.client, TlsFiles(_pki(cluster) / "ca.pem", cert, key))
    except (ssl.SSLError, ConnectionResetError):
        return
    assert _exchange(sock, [STATUS]) == []
    # The node may close the socket before its log line reaches the file: wait for it.
    wait_until(lambda: "tls_handshake_failed" in {e["event"] for e in log_events(cluster, 1)}, 10, "the failed handshake to be logged")


@pytest.mark.parametrize("stem, claims", [("client", 2), ("admin", 2), ("node-2", 3), ("node-3", 2)])
def test_a_hello_as_a_node_needs_that_nodes_certificate(cluster, stem, claims):
    """A client or admin certificate, or node 2's certificate claiming node 3 (and the
    reverse), says hello on node 1's peer port, then asks for a vote at a huge term:
    the node closes the connection at the hello and no node's term moves."""
    before = _terms(cluster)
    sock = _tls_connect(cluster.config.node(1).peer, _files(cluster, stem))
    forged = RequestVote(src=claims, dst=1, term=before[1] + 10**6, last_log_index=10**9, last_log_term=before[1] + 10**6)
    assert _exchange(sock, [encode_message(PeerHello(claims, 1, 12345)), encode_message(forged)]) == []
    assert _terms(cluster) == before
    errors = [e.get("error", "") for e in log_events(cluster, 1) if e["event"] == "frame_error"]
    assert any(f"hello as node {claims} on a connection whose certificate names" in e for e in errors), errors[-3:]


def test_a_node_certificate_is_refused_on_the_client_port(cluster):
    sock = _tls_connect(cluster.config.node(1).client, _files(cluster, "node-2"))
    assert _exchange(sock, [STATUS]) == []
    assert "client_identity_refused" in {e["event"] for e in log_events(cluster, 1)}


def test_member_remove_and_transfer_are_refused_without_the_admin_certificate(cluster, tmp_path):
    text = cluster.config_path.read_text()
    copy = tmp_path / "no-admin.toml"
    copy.write_text("".join(line for line in text.splitlines(keepends=True) if not line.startswith("admin_")))
    cli = [sys.executable, "-m", "raftproc.client", "--config", str(copy), "--timeout", "10"]
    for args in (["member", "remove", "3"], ["transfer"]):
        r = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "needs an admin certificate" in r.stderr, (args, r.stdout, r.stderr)
    # The client certificate still reads, writes and lists.
    r = subprocess.run([*cli, "member", "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "node 3: voter" in r.stdout, r.stderr
    assert sorted(cluster.members()["voters"]) == [1, 2, 3]


def test_private_keys_and_identity_files_are_the_owners_alone(cluster):
    keys = sorted(_pki(cluster).glob("*-key.pem"))
    assert len(keys) == 3 + 2 + 1, keys  # nodes, client and admin, the CA
    for path in keys + [cluster.config.node_data_dir(n) / name for n in cluster.config.nodes for name in ("identity", "peers")]:
        assert os.stat(path).st_mode & 0o777 == 0o600, f"{path} is {oct(os.stat(path).st_mode & 0o777)}"


def test_a_handshake_never_finished_is_closed_at_the_deadline(cluster):
    node = cluster.config.node(2)
    for address in (node.client, node.peer):
        silent = socket.create_connection(address, timeout=10)
        silent.settimeout(10 * HANDSHAKE_MS / 1000)
        assert silent.recv(100) == b"", "closed without an answer"
        silent.close()
    assert "tls_handshake_timeout" in {e["event"] for e in log_events(cluster, 2)}


def test_sighup_rotates_the_certificate_for_new_connections_only(cluster):
    node = cluster.config.node(3)

    def serial(sock: ssl.SSLSocket) -> bytes:
        return sock.getpeercert(binary_form=True)

    def status_on(sock: ssl.SSLSocket, request_id: int) -> dict:
        sock.settimeout(10)
        sock.sendall(encode_frame(codec.encode({"t": "status", "id": request_id})))
        decoder = FrameDecoder()
        while True:
            for frame in decoder.feed(sock.recv(65536)):
                return codec.decode_answer(frame)

    old = _tls_connect(node.client, _files(cluster, "admin"))
    first = serial(old)
    assert status_on(old, 1)["status"] == "ok"
    make_cert(_pki(cluster), node_identity(3), hosts=("127.0.0.1",))  # a new certificate and key, same files
    before_hup = _tls_connect(node.client, _files(cluster, "admin"))
    assert serial(before_hup) == first, "nothing changes before SIGHUP"
    before_hup.close()
    os.kill(cluster.process(3).pid, signal.SIGHUP)
    wait_until(lambda: "tls_reloaded" in {e["event"] for e in log_events(cluster, 3)}, 10, "tls_reloaded")
    new = _tls_connect(node.client, _files(cluster, "admin"))
    assert serial(new) != first, "new connections get the new certificate"
    assert status_on(new, 2)["status"] == "ok"
    assert status_on(old, 3)["status"] == "ok", "an open connection carries on"
    new.close()
    old.close()
    # Peers dial node 3 anew and accept its new certificate: the cluster still commits.
    c = cluster.client(timeout=10)
    try:
        c.set("after-rotation", "1")
        assert c.get("after-rotation") == "1"
    finally:
        c.close()


def test_join_mints_the_new_nodes_certificate(cluster):
    node = cluster.join(timeout=60)
    new = cluster.config.node(node)
    assert new.cert is not None and os.stat(new.key).st_mode & 0o777 == 0o600
    assert node in cluster.members()["voters"]
    c = cluster.client(timeout=10)
    try:
        c.set("joined", str(node))
        assert wait_until(
            lambda: (cluster.node_status(node) or {}).get("last_applied", 0) >= c.status(1)["commit_index"], 20, "the new node to apply"
        )
    finally:
        c.close()


def test_a_node_on_a_public_address_without_tls_warns_loudly(tmp_path):
    from raftproc.config import ClusterConfig, NodeAddress
    from raftproc.ops.cluster import Cluster
    from raftproc.ops.layout import free_ports

    peer, client = free_ports(2)
    cluster = Cluster(tmp_path / "run")
    cluster.create(
        ClusterConfig(
            nodes={1: NodeAddress(1, ("0.0.0.0", peer), ("0.0.0.0", client))}, data_dir=tmp_path / "data", log_dir=tmp_path / "logs"
        )
    )
    try:
        cluster.start(1)
        wait_until(lambda: any(e["event"] == "insecure_transport" for e in log_events(cluster, 1)), 20, "insecure_transport")
        assert "WITHOUT TLS" in (cluster.run_dir / "node-1.out").read_text()
    finally:
        cluster.down(timeout=3)
