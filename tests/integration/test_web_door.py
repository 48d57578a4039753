"""The live page's server guards its door (raftproc.ops.web): the page can kill
processes, so a request from another site, a rebound DNS name or the network
without the token gets nothing done, and every body and field is bounded. No
node runs here: the server is started over a config alone."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from raftproc.ops.cluster import Cluster
from raftproc.ops.layout import local_config
from raftproc.ops.web import MAX_BODY, WebServer


@pytest.fixture
def cluster(tmp_path) -> Cluster:
    c = Cluster(tmp_path / "run")
    c.create(local_config(3, tmp_path / "data", tmp_path / "logs", link_faults=True))
    return c


@pytest.fixture
def server(cluster) -> Iterator[WebServer]:
    s = WebServer(cluster, listen="127.0.0.1:0")
    s.start()
    yield s
    s.stop()


def ask(server: WebServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    port = server.httpd.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, (json.loads(data) if r.getheader("Content-Type") == "application/json" else {"text": data[:100]})


PAGE = {"X-Raftproc-Page": "1", "Content-Type": "application/json"}


def test_the_page_and_its_meta_are_served_on_loopback(server):
    status, meta = ask(server, "GET", "/api/meta")
    assert status == 200 and meta["mode"] == "live" and meta["nodes"] == [1, 2, 3] and meta["controllable"] == [1, 2, 3]
    assert meta["recording"].endswith(".jsonl")


def test_a_rebound_host_name_and_a_cross_site_post_are_refused(server):
    assert ask(server, "GET", "/api/meta", headers={"Host": "evil.example:80"})[0] == 403
    body = json.dumps({"action": "kill", "node": 1}).encode()
    # A form on another site can POST, but cannot add a header of its own.
    assert ask(server, "POST", "/api/action", body, {"Content-Type": "text/plain"})[0] == 403
    status, answer = ask(server, "POST", "/api/action", b"x" * (MAX_BODY + 1), PAGE)
    assert status == 413


def test_bad_actions_are_refused_with_reasons(server):
    for body, why in (
        ({"action": "format-disk"}, "unknown action"),
        ({"action": "kill", "node": 99}, "node must be one of [1, 2, 3]"),
        ({"action": "kill", "node": "1"}, "node must be one of"),
        ({"action": "split", "groups": "1|2"}, "split needs groups"),
        ({"action": "slow", "from": 1, "to": 2, "ms": "fast"}, "slow needs ms"),
        ({"action": "slow", "from": 1, "to": 2, "ms": 10**9}, "a delay is 0 to"),
    ):
        status, answer = ask(server, "POST", "/api/action", json.dumps(body).encode(), PAGE)
        text = answer.get("error") or answer.get("message", "")
        assert (status == 400 or answer.get("ok") is False) and why in text, (body, status, answer)
    status, answer = ask(server, "POST", "/api/client", json.dumps({"op": "set", "key": "k" * 5000, "value": "v"}).encode(), PAGE)
    assert status == 400 and "key is 1 to" in answer["error"]


def test_off_loopback_every_api_call_needs_the_token(cluster):
    s = WebServer(cluster, listen="0.0.0.0:0")
    s.start()
    try:
        assert s.token and f"token={s.token}" in s.url
        assert ask(s, "GET", "/api/meta")[0] == 403
        assert ask(s, "GET", "/api/meta?token=wrong")[0] == 403
        assert ask(s, "GET", f"/api/meta?token={s.token}")[0] == 200
        assert ask(s, "GET", "/api/meta", headers={"X-Raftproc-Token": s.token})[0] == 200
    finally:
        s.stop()
