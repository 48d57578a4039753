"""Every node serves Prometheus text at GET /metrics and its health at GET /health,
from its own event loop: the series parse with prometheus_client's parser and agree
with the cluster (one leader, one term, every write applied, fsyncs timed); health is
200 while a leader is known and 503 once a node is left alone; bad requests get 4xx."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from conftest import make_cluster
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until

pytestmark = pytest.mark.process

SERIES = {
    "raftproc_server_has_leader",
    "raftproc_server_is_leader",
    "raftproc_server_leader_changes_seen",
    "raftproc_server_proposals_committed",
    "raftproc_server_proposals_applied",
    "raftproc_server_proposals_pending",
    "raftproc_server_proposals_failed",
    "raftproc_server_term",
    "raftproc_disk_wal_fsync_duration_seconds",
    "raftproc_snapshot_save_duration_seconds",
    "raftproc_network_peer_round_trip_time_seconds",
    "raftproc_server_client_connections",
    "process_resident_memory_bytes",
    "process_open_fds",
}


def scrape(address) -> dict[str, dict]:
    """{family name: {sample name + labels: value}}"""
    text = urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5).read().decode()
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return out


def value(families, family: str, sample: str | None = None, **labels) -> float:
    for (name, lab), v in families[family].items():
        if (sample is None or name == sample) and all(dict(lab).get(k) == str(x) for k, x in labels.items()):
            return v
    raise KeyError((family, sample, labels))


def health(address) -> tuple[int, dict]:
    try:
        r = urllib.request.urlopen(f"http://{address[0]}:{address[1]}/health", timeout=5)
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def raw(address, request: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: what it answered may be lost with them
        return data


def test_every_node_serves_metrics_and_health(tmp_path):
    cluster = make_cluster(tmp_path, 3)
    try:
        cluster.up(wait=20)
        cfg = cluster.config
        client = cluster.client(timeout=10)
        for i in range(20):
            client.set(f"k{i}", "v")
        leader = cluster.wait_for_leader()
        target = client.status(leader)["commit_index"]
        wait_until(
            lambda: all(value(scrape(n.metrics), "raftproc_server_proposals_applied") >= target for n in cfg.nodes.values()),
            20,
            "every node to apply",
        )
        scraped = {i: scrape(n.metrics) for i, n in cfg.nodes.items()}
        for i, families in scraped.items():
            assert SERIES <= set(families), SERIES - set(families)
            assert value(families, "raftproc_server_has_leader") == 1
            assert value(families, "raftproc_disk_wal_fsync_duration_seconds", "raftproc_disk_wal_fsync_duration_seconds_count") > 0
            assert value(families, "process_resident_memory_bytes") > 10 * 2**20 and value(families, "process_open_fds") > 3
        assert sum(value(f, "raftproc_server_is_leader") for f in scraped.values()) == 1
        assert len({value(f, "raftproc_server_term") for f in scraped.values()}) == 1
        rtt = scraped[leader]["raftproc_network_peer_round_trip_time_seconds"]
        peers = {dict(lab)["peer"] for (name, lab) in rtt if name.endswith("_count")}
        assert peers == {str(n) for n in cfg.nodes if n != leader}
        for n in cfg.nodes.values():
            status, body = health(n.metrics)
            assert status == 200 and body["healthy"], body

        m = cfg.node(1).metrics
        assert raw(m, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert raw(m, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
        assert raw(m, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        oversized = raw(m, b"GET /" + b"a" * 20_000)
        assert oversized == b"" or oversized.startswith(b"HTTP/1.1 400"), oversized[:40]

        # Alone, a node knows no leader: 503, and it says why.
        for n in (2, 3):
            cluster.kill(n)

        def unhealthy():
            status, body = health(cfg.node(1).metrics)
            return body if status == 503 else None

        body = wait_until(unhealthy, 20, "node 1 to report itself unhealthy")
        assert body["reason"] == "no leader known"
        client.close()
    finally:
        cluster.down(timeout=3)
