"""Who a data directory belongs to, and which data each peer was last seen with.

Raft's safety rests on every voter keeping what it promised: its vote and the
entries it acknowledged. A node restarted on an empty (wiped, replaced) data
directory under its old id has forgotten both, and its vote could then elect a
leader that lacks committed entries. So:

- `identity` in the data directory names the node and a random incarnation,
  written once when the directory is first used. A directory used under another
  id refuses to start.
- Each outbound peer connection opens with a hello carrying the sender's
  incarnation. The receiver records every peer's incarnation the first time it
  hears it (`peers` in its data directory, fsynced before the connection is
  accepted) and refuses, from then on, a hello from that id with another one:
  that node lost its data, and nothing it says may count (it is told why, and
  logs `refused_by_peer`). Once a configuration without that node is applied,
  its incarnation is forgotten: removed, it can be rebuilt (`rebuild_data_dir`,
  `node --rebuild`, `supervisor.py rebuild`) and added back under its own id.
- Members' incarnations also travel through the log (raftproc.kv.state_machine),
  so a node refuses a wiped peer it never met, by what the cluster recorded.
- A rebuilt directory holds a `joining` marker: the node starts as one that is
  not in the first configuration, and waits to be added, instead of counting
  itself a voter of the bootstrap configuration with an empty log.

Both files are small CBOR maps, readable by their owner only, replaced atomically
(write, fsync, rename, directory fsync).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import cbor2

from raftproc.runtime.wal import fsync_dir, write_all

IDENTITY_FILE = "identity"
PEERS_FILE = "peers"
JOINING_FILE = "joining"
DIVERGED_FILE = "diverged"
KEEP_ON_REBUILD = ("LOCK",)  # held by the process that rebuilds (raftproc.runtime.dirlock)


class IdentityError(Exception):
    """The data directory belongs to another node, or its identity is unreadable."""


@dataclass(frozen=True, slots=True)
class PeerHello:
    """The first frame on every peer connection: who dials, whom, with which data."""

    src: int
    dst: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerRefused:
    """The answer to a hello that is refused, sent before the connection closes, so
    the refused node's own log says why."""

    src: int
    dst: int
    reason: str


def load_identity(data_dir: Path, node_id: int, *, sync: bool = True, rng: random.Random | None = None) -> int:
    """This node's incarnation, made (and made durable) on first use of the directory."""
    path = data_dir / IDENTITY_FILE
    if path.exists():
        body = _read_map(path)
        node, incarnation = body.get("node"), body.get("incarnation")
        if not _is_id(node) or not _is_id(incarnation):
            raise IdentityError(f"{path}: not a node identity")
        if node != node_id:
            raise IdentityError(f"{data_dir} holds node {node}'s data, not node {node_id}'s")
        assert isinstance(incarnation, int)
        return incarnation
    incarnation = (rng or random.SystemRandom()).getrandbits(62) + 1
    _replace(path, {"node": node_id, "incarnation": incarnation}, sync)
    return incarnation


class KnownPeers:
    """Each peer's incarnation as first heard, kept across restarts."""

    def __init__(self, data_dir: Path, *, sync: bool = True) -> None:
        self.path = data_dir / PEERS_FILE
        self.sync = sync
        self.seen: dict[int, int] = {}
        if self.path.exists():
            body = _read_map(self.path)
            if not all(_is_id(k) and _is_id(v) for k, v in body.items()):
                raise IdentityError(f"{self.path}: not a table of peer incarnations")
            self.seen = dict(body)

    def admit(self, peer: int, incarnation: int) -> str | None:
        """None when `peer` may speak with this incarnation (recording it, durably,
        the first time); otherwise why not."""
        known = self.seen.get(peer)
        if known == incarnation:
            return None
        if known is not None:
            # The known incarnation is what admits the peer: never echo it.
            return f"node {peer} came back with other data: it lost what it promised; rebuild it (supervisor.py rebuild, docs/storage.md)"
        _replace(self.path, {**self.seen, peer: incarnation}, self.sync)
        self.seen[peer] = incarnation
        return None

    def record(self, peer: int, incarnation: int) -> None:
        """Take `incarnation` as `peer`'s, whatever was heard before: the cluster's
        log says so (it was rebuilt while this node was away)."""
        if self.seen.get(peer) != incarnation:
            _replace(self.path, {**self.seen, peer: incarnation}, self.sync)
            self.seen[peer] = incarnation

    def forget(self, peers: list[int]) -> None:
        """Drop what was heard of `peers`: they left the configuration, and may come
        back rebuilt, with new data, under the same ids."""
        keep = {p: i for p, i in self.seen.items() if p not in peers}
        if keep != self.seen:
            _replace(self.path, keep, self.sync)
            self.seen = keep


def rebuild_data_dir(data_dir: Path, *, sync: bool = True) -> None:
    """Empty `data_dir` (but its lock) and mark it joining: the node comes back as a
    new incarnation that waits to be added, and catches up from the leader. The
    marker is written and the old identity dropped first: a crash part-way must not
    leave the old incarnation over a half-wiped log."""
    _replace(data_dir / JOINING_FILE, {"joining": True}, sync)
    (data_dir / IDENTITY_FILE).unlink(missing_ok=True)
    if sync:
        fsync_dir(data_dir)
    for path in data_dir.iterdir():
        if path.name in KEEP_ON_REBUILD or path.name == JOINING_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def is_joining(data_dir: Path) -> bool:
    return (data_dir / JOINING_FILE).exists()


def record_divergence(data_dir: Path, fields: dict, *, sync: bool = True) -> None:
    """Keep the divergence alarm (raftproc.core.divergence) across restarts: a node
    that forgot it would vote and campaign again on a history that contradicts the
    cluster's. Only a rebuild (which empties the directory) clears it."""
    _replace(data_dir / DIVERGED_FILE, fields, sync)


def recorded_divergence(data_dir: Path) -> dict | None:
    path = data_dir / DIVERGED_FILE
    return _read_map(path) if path.exists() else None


def _read_map(path: Path) -> dict:
    try:
        body = cbor2.loads(path.read_bytes())
    except (OSError, ValueError, cbor2.CBORDecodeError) as e:
        raise IdentityError(f"{path}: unreadable: {e}") from None
    if not isinstance(body, dict):
        raise IdentityError(f"{path}: not a CBOR map")
    return body


def _replace(path: Path, body: dict, sync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # Owner only: the incarnations are what a peer's hello must match.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temporary file keeps its mode through O_CREAT
        write_all(fd, cbor2.dumps(body))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(path.parent)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
