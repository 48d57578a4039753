from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest

from raftproc.config import ConfigError, NodeAddress, default_config, load_config, parse_config, to_toml
from raftproc.kv.commands import REGISTERED, Command
from raftproc.kv.state_machine import KeyValueStore


def apply_all(kv, *cmds):
    return [kv.apply(kv.last_applied + 1, c.encode() if c else None) for c in cmds]


def test_kv_operations():
    kv = KeyValueStore()
    r = apply_all(
        kv,
        None,
        Command("set", "x", "1"),
        Command("get", "x"),
        Command("cas", "x", "2", expect="9"),
        Command("cas", "x", "2", expect="1"),
        Command("del", "x"),
        Command("del", "x"),
        Command("cas", "y", "new", expect=None),
    )
    assert r[0] is None
    assert r[1:] == [
        {"ok": True},
        {"ok": True, "value": "1"},
        {"ok": False, "mismatch": True, "value": "1"},
        {"ok": True},
        {"ok": True, "existed": True},
        {"ok": True, "existed": False},
        {"ok": True},
    ]
    assert kv.data == {"y": "new"}


def test_kv_retry_with_same_sequence_number_applies_once():
    kv = KeyValueStore()
    first = apply_all(kv, Command("set", "k", "a", client=7, seq=1), Command("cas", "k", "b", expect="a", client=7, seq=2))
    again = apply_all(kv, Command("cas", "k", "b", expect="a", client=7, seq=2))
    assert first[1] == again[0] == {"ok": True}
    assert kv.data["k"] == "b"
    stale = apply_all(kv, Command("set", "k", "zzz", client=7, seq=1))
    assert stale[0]["ok"] is False and kv.data["k"] == "b"


def test_sessions_are_bounded_and_evict_the_least_recently_applied():
    kv = KeyValueStore(max_sessions=3)
    apply_all(kv, *(Command("set", "k", str(c), client=c, seq=1) for c in (1, 2, 3)))
    apply_all(kv, Command("set", "k", "again", client=1, seq=2))  # client 1 is the most recent now
    apply_all(kv, Command("set", "k", "4", client=4, seq=1))  # evicts client 2, not 1
    assert list(kv.sessions) == [3, 1, 4]
    for c in range(5, 1000):
        apply_all(kv, Command("set", f"x{c}", "v", client=c, seq=1))
    assert len(kv.sessions) == 3


def test_a_retry_from_a_forgotten_session_is_refused_never_applied_twice():
    kv = KeyValueStore(max_sessions=2)
    apply_all(kv, Command("set", "n", "1", client=1, seq=5))
    apply_all(kv, *(Command("set", "other", "v", client=c, seq=1) for c in (2, 3)))  # client 1 forgotten
    before = dict(kv.data)
    [result] = apply_all(kv, Command("set", "n", "1", client=1, seq=5, retry=True))
    assert result["session_expired"] and "session expired" in result["error"]
    assert kv.data == before and 1 not in kv.sessions
    # A first attempt from an unknown client opens a session: that is how every client starts.
    [fresh] = apply_all(kv, Command("set", "n", "2", client=1, seq=6))
    assert fresh == {"ok": True} and kv.sessions[1][0] == 6
    # A retry whose session is known is answered from the table, as before.
    assert apply_all(kv, Command("set", "n", "2", client=1, seq=6, retry=True)) == [{"ok": True}]


def test_every_replica_forgets_the_same_sessions_and_snapshots_keep_the_order():
    log = [Command("set", f"k{i % 7}", str(i), client=1 + (i * 7919) % 50, seq=i + 1) for i in range(500)]
    a, b = KeyValueStore(max_sessions=10), KeyValueStore(max_sessions=10)
    apply_all(a, *log[:250])
    c = KeyValueStore(max_sessions=10)
    c.restore(a.last_applied, a.image())
    apply_all(a, *log[250:])
    apply_all(b, *log)
    apply_all(c, *log[250:])
    assert list(a.sessions.items()) == list(b.sessions.items()) == list(c.sessions.items())


def test_commands_keep_the_shorter_form_unless_a_retry():
    first = Command("set", "k", "v", client=1, seq=1)
    assert Command.decode(first.encode()) == first and len(cbor2.loads(first.encode())) == 6
    retry = Command("set", "k", "v", client=1, seq=1, retry=True)
    assert Command.decode(retry.encode()) == retry


def test_kv_applies_in_order_only():
    kv = KeyValueStore()
    with pytest.raises(ValueError):
        kv.apply(2, None)


def test_config_defaults_are_the_documented_local_cluster():
    cfg = default_config()
    assert sorted(cfg.nodes) == [1, 2, 3, 4, 5]
    assert cfg.nodes[3].peer == ("127.0.0.1", 7103) and cfg.nodes[3].client == ("127.0.0.1", 7203)
    assert str(cfg.node_data_dir(3)) == "data/node-3" and str(cfg.node_log_file(3)) == "logs/node-3.jsonl"
    assert cfg.raft().election_timeout_min * cfg.tick_ms == 150


def test_config_round_trips_through_toml(tmp_path):
    cfg = default_config(3)
    cfg = replace(cfg, nodes={**cfg.nodes, 4: NodeAddress(4, ("127.0.0.1", 7104), ("127.0.0.1", 7204), join=True)})
    assert cfg.bootstrap_voters() == (1, 2, 3)  # a joining node is not in the first configuration
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "text, says",
    [
        ("node = 3", "[[node]]"),
        ("[[node]]\nid = 1\npeer = 'x'\nclient = '127.0.0.1:1'", "HOST:PORT"),
        (
            "[[node]]\nid = 1\npeer = '127.0.0.1:1'\nclient = '127.0.0.1:2'\n[[node]]\nid = 1\npeer = '127.0.0.1:3'\nclient = '127.0.0.1:4'",
            "twice",
        ),
        ("tick_ms = 0\n[[node]]\nid = 1\npeer = '127.0.0.1:1'\nclient = '127.0.0.1:2'", "tick_ms"),
        ("heartbeat_interval = 9\n[[node]]\nid = 1\npeer = '127.0.0.1:1'\nclient = '127.0.0.1:2'", "heartbeat"),
        ("colour = 'red'\n[[node]]\nid = 1\npeer = '127.0.0.1:1'\nclient = '127.0.0.1:2'", "unknown keys"),
        ("this is [not toml", "not valid TOML"),
        ("[[node]]\nid = 1\npeer = '127.0.0.1:1'\nclient = '127.0.0.1:2'\njoin = 'yes'", "join must be true or false"),
        ("[[node]]\nid = 1\npeer = '127.0.0.1:1'\nclient = '127.0.0.1:2'\njoin = true", "first configuration needs"),
    ],
)
def test_config_errors_say_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert says in str(err.value)


def test_config_unknown_node_id():
    with pytest.raises(ConfigError) as err:
        default_config().node(9)
    assert "9" in str(err.value)
    assert parse_config({"node": [{"id": 1, "peer": "h:1", "client": "h:2"}]}).nodes[1].peer == ("h", 1)


TLS_CONFIG = """
[[node]]
id = 1
peer = "127.0.0.1:7101"
client = "127.0.0.1:7201"
cert = "tls/node-1.pem"
key = "/abs/node-1-key.pem"

[[node]]
id = 2
peer = "10.0.0.2:7102"
client = "10.0.0.2:7202"

[tls]
ca = "tls/ca.pem"
client_cert = "tls/client.pem"
client_key = "tls/client-key.pem"
"""


def test_tls_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "etc" / "cluster.toml"
    path.parent.mkdir()
    path.write_text(TLS_CONFIG)
    cfg = load_config(path)
    files = cfg.node_tls(1)
    assert files.ca == path.parent / "tls/ca.pem" and files.cert == path.parent / "tls/node-1.pem"
    assert str(files.key) == "/abs/node-1-key.pem"
    # No admin certificate in the file: a client presents the client one.
    assert cfg.client_tls().cert == path.parent / "tls/client.pem"
    with pytest.raises(ConfigError, match="node 2's \\[\\[node\\]\\] table needs cert and key"):
        cfg.node_tls(2)
    again = load_config(_write(tmp_path / "copy.toml", to_toml(cfg)))
    assert again.tls == cfg.tls and again.nodes[1].cert == cfg.nodes[1].cert


def test_tls_table_errors_say_what_is_wrong(tmp_path):
    for extra, says in [
        ('[tls]\nclient_cert = "c.pem"\n', "needs ca"),
        ('[tls]\nca = "ca.pem"\nadmin_cert = "a.pem"\n', "admin_cert and admin_key go together"),
        ('[tls]\nca = "ca.pem"\nverify = false\n', "needs ca"),
    ]:
        text = '[[node]]\nid = 1\npeer = "127.0.0.1:1"\nclient = "127.0.0.1:2"\n' + extra
        with pytest.raises(ConfigError, match=says):
            load_config(_write(tmp_path / "c.toml", text))


def test_plaintext_config_has_no_tls():
    cfg = default_config()
    assert cfg.tls is None and cfg.node_tls(1) is None and cfg.client_tls() is None


def _write(path, text):
    path.write_text(text)
    return path


def test_scan_pages_through_a_prefix_in_order_bounded_in_count_and_bytes():
    kv = KeyValueStore()
    apply_all(kv, *(Command("set", k, k.upper()) for k in ("a", "ab", "abc", "abd", "b", "ab/x", "aa")), Command("del", "abc"))
    assert kv.scan("ab", None, 2) == {"ok": True, "items": [["ab", "AB"], ["ab/x", "AB/X"]], "more": True}
    assert kv.scan("ab", "ab/x", 2) == {"ok": True, "items": [["abd", "ABD"]], "more": False}
    assert [k for k, _ in kv.scan("", None, 100)["items"]] == ["a", "aa", "ab", "ab/x", "abd", "b"]
    assert kv.scan("zz", None, 5) == {"ok": True, "items": [], "more": False}
    big = KeyValueStore()
    apply_all(big, *(Command("set", f"k{i}", "v" * 400_000) for i in range(5)))
    page = big.scan("k", None, 100)
    assert len(page["items"]) == 2 and page["more"], "a page stops near a MiB, however many keys were asked for"
    restored = KeyValueStore()
    restored.restore(kv.last_applied, kv.image())
    assert restored.keys is None, "a restore sorts nothing until someone scans"
    assert restored.scan("a", None, 10) == kv.scan("a", None, 10), "the key index is rebuilt from a snapshot"
    apply_all(restored, Command("set", "ac", "AC"), Command("del", "aa"))
    assert [k for k, _ in restored.scan("a", None, 10)["items"]] == ["a", "ab", "ab/x", "abd", "ac"], "kept up once built"


def test_applying_the_proposed_command_equals_decoding_its_bytes():
    """The leader hands apply() the Command it proposed; a follower decodes the bytes.
    Both must leave the same store, digest and answers."""
    commands = [
        Command("set", "x", "1", client=1, seq=1),
        Command("cas", "x", "2", expect="1", client=1, seq=2),
        Command("del", "x", client=2, seq=1),
        Command("set", "x", "1", client=1, seq=2),
    ]
    leader, follower = KeyValueStore(), KeyValueStore()
    for i, cmd in enumerate(commands, 1):
        assert leader.apply(i, cmd.encode(), cmd) == follower.apply(i, cmd.encode())
    assert leader.data == follower.data and leader.sessions == follower.sessions
    assert leader.state_digest() == follower.state_digest()


def test_registered_ids_tell_a_new_client_from_a_forgotten_one():
    kv = KeyValueStore(max_sessions=2)
    [reg] = apply_all(kv, Command("register", ""))
    me = reg["client"]
    assert me == REGISTERED + 1 and kv.sessions[me] == (0, {"ok": True})
    # Its first write, sent twice across a failover (the second marked a retry): applied once.
    assert apply_all(kv, Command("set", "k", "1", client=me, seq=1, retry=True)) == [{"ok": True}]
    assert apply_all(kv, Command("set", "k", "1", client=me, seq=1, retry=True)) == [{"ok": True}]
    # Forgotten after two newer clients: a registered id without a session is expired,
    # first attempt or not, and nothing is applied.
    apply_all(kv, Command("register", ""), Command("register", ""))
    before = dict(kv.data)
    [gone] = apply_all(kv, Command("set", "k", "2", client=me, seq=2))
    assert gone["session_expired"] and "issued" in gone["error"] and kv.data == before
    assert me not in kv.sessions, "an expired id must not reopen a session"
