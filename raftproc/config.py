"""Cluster configuration: built-in defaults for a local 5-node cluster, or a TOML file.

With no file, node N (1..5) listens for peers on 127.0.0.1:710N, for clients on
127.0.0.1:720N, for metrics scrapes on 127.0.0.1:730N and for Redis clients (RESP)
on 127.0.0.1:740N, keeps its WAL in
data/node-N and its JSON log in logs/node-N.jsonl.

A TOML file looks like this (every top-level key is optional):

    data_dir = "data"          # node N uses <data_dir>/node-N
    log_dir = "logs"           # node N writes <log_dir>/node-N.jsonl
    log_level = "info"         # debug | info | warning | error
    tick_ms = 10
    election_timeout_min = 15  # in ticks
    election_timeout_max = 30
    heartbeat_interval = 5
    max_frame = 16777216       # bytes; larger frames close the connection
    max_request_bytes = 1572864  # a client request's size limit (etcd's default, 1.5 MiB)
    max_message_bytes = 1048576  # commands per AppendEntries, in bytes (one larger entry goes alone)
    max_clients = 1024         # client connections; more are closed at once
    idle_timeout_ms = 60000    # a connection that completes no frame for this long is closed
    handshake_timeout_ms = 5000  # a TLS handshake and a connection's first frame must finish in this
    peer_buffer = 67108864     # bytes queued per peer before messages are dropped
    background_sync = false    # fdatasync on a thread while the loop goes on
    pre_vote = true            # ask before raising the term (Raft thesis 9.6)
    check_quorum = true        # a leader that hears no majority steps down (6.2); needed by lease reads
    max_clock_drift = 0.05     # how far a node's clock rate may stray from real time (0.05: 5%);
                               # read leases are shortened to stay safe within it
    redis_forward = true       # a follower's RESP port forwards commands to the leader; false:
                               # it answers -MOVED 0 <leader's redis address>, as Redis Cluster does
    link_faults = false        # take injected link faults (cuts, delays) from an admin: for
                               # demos and tests only (supervisor clusters set it; docs/watch.md)
    snapshot_entries = 10000   # snapshot once this many entries applied since the last, and
                               # their commands make half the last snapshot's size
    snapshot_bytes = 67108864  # ... or once those commands pass this size, in any case
    snapshot_chunk_bytes = 524288  # InstallSnapshot streams in chunks of this size
    segment_bytes = 16777216   # a WAL segment is closed past this size

    [[node]]
    id = 1
    peer = "127.0.0.1:7101"
    client = "127.0.0.1:7201"
    # join = true              # not in the first configuration: the node starts as a
                               # non-voter and waits for `client member add` (docs/operations.md)
    # metrics = "127.0.0.1:7301"  # GET /metrics (Prometheus) and /health (docs/operations.md, Metrics)
    # redis = "127.0.0.1:7401"    # the RESP port: redis-cli and every Redis client (docs/redis.md)
    # cert = "tls/node-1.pem"  # with [tls]: this node's certificate and key
    # key = "tls/node-1-key.pem"

    [tls]                      # optional: mutual TLS on both ports (docs/operations.md, Security)
    ca = "tls/ca.pem"          # the CA bundle every certificate must chain to
    client_cert = "tls/client-default.pem"   # what the client CLI presents: admin_* if
    client_key = "tls/client-default-key.pem"  # given, else client_*
    admin_cert = "tls/admin-default.pem"
    admin_key = "tls/admin-default-key.pem"

Relative paths under [tls] and in a node's cert/key are relative to the config
file's directory (data_dir and log_dir are relative to the working directory).

The [[node]] tables without `join` are the cluster's first configuration. After
that, membership lives in the log (`python -m raftproc.client member ...`), and the
addresses of nodes added there travel with it, so the other nodes' files need not
list them. A joining node's own file must list the current members: it answers the
leader at the address it finds there.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raftproc.core.types import RaftOptions
from raftproc.runtime.addresses import Address, parse_address
from raftproc.runtime.tls import TlsFiles

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class NodeAddress:
    id: int
    peer: Address
    client: Address
    join: bool = False  # not in the first configuration
    cert: Path | None = None  # with [tls]: the node's own certificate and key
    key: Path | None = None
    metrics: Address | None = None  # where GET /metrics and /health are served (None: nowhere)
    redis: Address | None = None  # where the RESP port listens (None: nowhere)


@dataclass(frozen=True)
class TlsConfig:
    ca: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    admin_cert: Path | None = None
    admin_key: Path | None = None


@dataclass(frozen=True)
class ClusterConfig:
    nodes: dict[int, NodeAddress]
    data_dir: Path = Path("data")
    log_dir: Path = Path("logs")
    log_level: str = "info"
    tick_ms: int = 10
    election_timeout_min: int = 15
    election_timeout_max: int = 30
    heartbeat_interval: int = 5
    max_frame: int = 16 * 1024 * 1024
    peer_buffer: int = 64 * 1024 * 1024
    max_request_bytes: int = 1536 * 1024
    max_message_bytes: int = 1024 * 1024
    max_clients: int = 1024
    idle_timeout_ms: int = 60_000
    background_sync: bool = False
    pre_vote: bool = True
    check_quorum: bool = True
    max_clock_drift: float = 0.05
    link_faults: bool = False
    redis_forward: bool = True  # a follower's RESP port forwards to the leader (else -MOVED)
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 64 * 1024 * 1024
    snapshot_chunk_bytes: int = 512 * 1024
    segment_bytes: int = 16 * 1024 * 1024
    handshake_timeout_ms: int = 5000
    tls: TlsConfig | None = None
    source: str = field(default="built-in defaults", compare=False)

    def raft(self) -> RaftOptions:
        return RaftOptions(
            election_timeout_min=self.election_timeout_min,
            election_timeout_max=self.election_timeout_max,
            heartbeat_interval=self.heartbeat_interval,
            max_bytes_per_message=self.max_message_bytes,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            max_clock_drift=self.max_clock_drift,
        )

    def node(self, node_id: int) -> NodeAddress:
        if node_id not in self.nodes:
            raise ConfigError(f"node id {node_id} is not in the cluster ({self.source}); known ids: {sorted(self.nodes)}")
        return self.nodes[node_id]

    def node_data_dir(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}"

    def node_log_file(self, node_id: int) -> Path:
        return self.log_dir / f"node-{node_id}.jsonl"

    def bootstrap_voters(self) -> tuple[int, ...]:
        """The first configuration: every node not marked `join`."""
        return tuple(sorted(i for i, n in self.nodes.items() if not n.join))

    def client_addresses(self) -> dict[int, Address]:
        return {i: n.client for i, n in self.nodes.items()}

    def node_tls(self, node_id: int) -> TlsFiles | None:
        """Node `node_id`'s certificate, key and CA; None when the cluster runs in plaintext."""
        if self.tls is None:
            return None
        n = self.node(node_id)
        if n.cert is None or n.key is None:
            raise ConfigError(f"{self.source}: [tls] is set, so node {node_id}'s [[node]] table needs cert and key")
        return TlsFiles(self.tls.ca, n.cert, n.key)

    def client_tls(self) -> TlsFiles | None:
        """What a client presents: the admin certificate if the config has one, else the client's."""
        t = self.tls
        if t is None:
            return None
        if t.admin_cert is not None:
            return TlsFiles(t.ca, t.admin_cert, t.admin_key)
        return TlsFiles(t.ca, t.client_cert, t.client_key)


def default_config(nodes: int = 5) -> ClusterConfig:
    return ClusterConfig(
        nodes={
            i: NodeAddress(
                i, ("127.0.0.1", 7100 + i), ("127.0.0.1", 7200 + i), metrics=("127.0.0.1", 7300 + i), redis=("127.0.0.1", 7400 + i)
            )
            for i in range(1, nodes + 1)
        }
    )


_INT_KEYS = (
    "tick_ms",
    "election_timeout_min",
    "election_timeout_max",
    "heartbeat_interval",
    "max_frame",
    "peer_buffer",
    "snapshot_entries",
    "snapshot_bytes",
    "snapshot_chunk_bytes",
    "segment_bytes",
    "max_request_bytes",
    "max_message_bytes",
    "max_clients",
    "idle_timeout_ms",
    "handshake_timeout_ms",
)


_BOOL_KEYS = ("background_sync", "pre_vote", "check_quorum", "link_faults", "redis_forward")


def _drift(value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 0.5:
        raise ConfigError(f"{source}: max_clock_drift must be a number from 0 to below 0.5 (0.05: clocks within 5%)")
    return float(value)


def load_config(path: str | Path | None) -> ClusterConfig:
    """The built-in defaults when `path` is None; otherwise the file, checked."""
    if path is None:
        return default_config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return parse_config(raw, source=str(path), base=path.resolve().parent)


_NODE_KEYS = {"id", "peer", "client", "join", "cert", "key", "metrics", "redis"}
_TLS_KEYS = ("ca", "client_cert", "client_key", "admin_cert", "admin_key")


def parse_config(raw: dict, *, source: str = "config", base: Path | None = None) -> ClusterConfig:
    """`base`: the directory relative TLS paths start from (the config file's)."""
    base = base or Path.cwd()
    known = {"node", "data_dir", "log_dir", "log_level", "tls", "max_clock_drift", *_BOOL_KEYS, *_INT_KEYS}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}")
    cfg = replace(ClusterConfig(nodes=_nodes(raw.get("node"), base, source), source=source), **_settings(raw, base, source))
    _check_sizes(cfg, source)
    try:
        cfg.raft()
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def _nodes(tables: object, base: Path, source: str) -> dict[int, NodeAddress]:
    """The [[node]] tables, each checked, by id."""
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{source}: needs at least one [[node]] table")
    nodes: dict[int, NodeAddress] = {}
    for n in tables:
        if not isinstance(n, dict) or not {"id", "peer", "client"} <= set(n) <= _NODE_KEYS:
            raise ConfigError(f"{source}: each [[node]] has id, peer and client, and may have join, cert, key, metrics and redis")
        if not isinstance(n.get("join", False), bool):
            raise ConfigError(f"{source}: join must be true or false")
        if not isinstance(n["id"], int) or n["id"] < 1:
            raise ConfigError(f"{source}: node id must be a positive integer, got {n['id']!r}")
        if n["id"] in nodes:
            raise ConfigError(f"{source}: node id {n['id']} appears twice")
        nodes[n["id"]] = NodeAddress(
            n["id"],
            _address(n["peer"], source),
            _address(n["client"], source),
            n.get("join", False),
            cert=_path(n.get("cert"), base, source, "cert"),
            key=_path(n.get("key"), base, source, "key"),
            metrics=_address(n["metrics"], source) if "metrics" in n else None,
            redis=_address(n["redis"], source) if "redis" in n else None,
        )
    if all(n.join for n in nodes.values()):
        raise ConfigError(f"{source}: every node is marked join; the first configuration needs at least one")
    return nodes


def _settings(raw: dict, base: Path, source: str) -> dict[str, Any]:
    """The top-level keys the file sets, each checked; the rest keep their defaults."""
    changes: dict[str, Any] = {}
    for key in _INT_KEYS:
        if key in raw:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1:
                raise ConfigError(f"{source}: {key} must be a positive integer")
            changes[key] = raw[key]
    for key in ("data_dir", "log_dir"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise ConfigError(f"{source}: {key} must be a path")
            changes[key] = Path(raw[key])
    for key in _BOOL_KEYS:
        if key in raw:
            if not isinstance(raw[key], bool):
                raise ConfigError(f"{source}: {key} must be true or false")
            changes[key] = raw[key]
    if "max_clock_drift" in raw:
        changes["max_clock_drift"] = _drift(raw["max_clock_drift"], source)
    if "log_level" in raw:
        if raw["log_level"] not in LOG_LEVELS:
            raise ConfigError(f"{source}: log_level must be one of {LOG_LEVELS}")
        changes["log_level"] = raw["log_level"]
    if "tls" in raw:
        changes["tls"] = _tls(raw["tls"], base, source)
    return changes


def _check_sizes(cfg: ClusterConfig, source: str) -> None:
    if cfg.snapshot_chunk_bytes > cfg.max_frame - 4096:
        raise ConfigError(f"{source}: snapshot_chunk_bytes must leave room for a frame header under max_frame")
    # One request becomes one entry, and an entry larger than max_message_bytes
    # travels alone in an AppendEntries: both must fit in a frame with room to spare.
    if max(cfg.max_request_bytes, cfg.max_message_bytes) * 2 > cfg.max_frame:
        raise ConfigError(f"{source}: max_request_bytes and max_message_bytes must each be at most half of max_frame")


def _address(text: object, source: str) -> Address:
    try:
        return parse_address(text)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def _tls(raw: object, base: Path, source: str) -> TlsConfig:
    if not isinstance(raw, dict) or "ca" not in raw or not set(raw) <= set(_TLS_KEYS):
        raise ConfigError(f"{source}: [tls] needs ca and may have {', '.join(_TLS_KEYS[1:])}")
    ca = _path(raw["ca"], base, source, "tls.ca")
    if ca is None:
        raise ConfigError(f"{source}: [tls] needs ca")
    tls = TlsConfig(ca, **{k: _path(raw.get(k), base, source, f"tls.{k}") for k in _TLS_KEYS[1:]})
    for role in ("client", "admin"):
        if (getattr(tls, f"{role}_cert") is None) != (getattr(tls, f"{role}_key") is None):
            raise ConfigError(f"{source}: [tls] {role}_cert and {role}_key go together")
    return tls


def _path(value: object, base: Path, source: str, what: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: {what} must be a path")
    return base / value


def to_toml(cfg: ClusterConfig) -> str:
    """Write a config back out (the supervisor uses this for clusters it creates).
    Keys left at their defaults are not written, so a file from a newer version
    still loads in an older one unless it uses what only the newer one knows."""
    defaults = ClusterConfig(nodes={})
    lines = [
        f'data_dir = "{cfg.data_dir}"',
        f'log_dir = "{cfg.log_dir}"',
        f'log_level = "{cfg.log_level}"',
        *(f"{k} = {'true' if getattr(cfg, k) else 'false'}" for k in _BOOL_KEYS if getattr(cfg, k) != getattr(defaults, k)),
    ]
    lines += [f"{k} = {getattr(cfg, k)}" for k in (*_INT_KEYS, "max_clock_drift") if getattr(cfg, k) != getattr(defaults, k)]
    for n in cfg.nodes.values():
        lines += ["", "[[node]]", f"id = {n.id}", f'peer = "{n.peer[0]}:{n.peer[1]}"', f'client = "{n.client[0]}:{n.client[1]}"']
        if n.join:
            lines.append("join = true")
        lines += [f'{k} = "{a[0]}:{a[1]}"' for k in ("metrics", "redis") if (a := getattr(n, k)) is not None]
        lines += [f'{k} = "{getattr(n, k)}"' for k in ("cert", "key") if getattr(n, k) is not None]
    if cfg.tls is not None:
        lines += ["", "[tls]", *(f'{k} = "{getattr(cfg.tls, k)}"' for k in _TLS_KEYS if getattr(cfg.tls, k) is not None)]
    return "\n".join(lines) + "\n"
