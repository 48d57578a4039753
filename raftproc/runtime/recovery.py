"""The storage room's start-up: a node's durable state as it is found, the newest
valid snapshot, then the WAL after it (`recover_state`, also used by tools that
check a data directory after a run), and the store and the core rebuilt on top
(`recover_node`, what the node host starts from)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftproc.core.messages import SnapshotMeta
from raftproc.core.node import RaftNode
from raftproc.core.types import RaftOptions
from raftproc.kv.state_machine import KeyValueStore, KvImage
from raftproc.runtime import snapshot
from raftproc.runtime.identity import is_joining
from raftproc.runtime.logging import core_logger
from raftproc.runtime.snapshot import SnapshotFile
from raftproc.runtime.wal import SEGMENT_BYTES, Recovered, WriteAheadLog


@dataclass
class RecoveredState:
    wal: WriteAheadLog
    wal_tail: Recovered  # hard state and the entries after the snapshot
    snapshot: SnapshotFile | None
    meta: SnapshotMeta | None
    image: KvImage | None
    floor: int


def recover_state(data_dir: Path, *, warn: Callable[..., Any], segment_bytes: int = SEGMENT_BYTES, **wal_options: Any) -> RecoveredState:
    """Raises WalCorruption when the WAL is corrupt or cannot continue the snapshot
    found (e.g. the newest snapshot was corrupt and the log behind the older one
    is gone)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in snapshot.remove_temporaries(data_dir):
        warn("snapshot_partial_removed", file=name)
    loaded = snapshot.load_newest(data_dir, warn)
    floor = snapshot.wal_floor(data_dir)
    snap, meta, image = loaded if loaded is not None else (None, None, None)
    wal, rec = WriteAheadLog.open(
        data_dir, warn=warn, base=meta.index if meta else 0, floor=floor, segment_bytes=segment_bytes, **wal_options
    )
    return RecoveredState(wal, rec, snap, meta, image, floor)


@dataclass
class RecoveredNode:
    """A node as its data directory left it: the store, the core on top, the WAL
    to go on writing, and the address books the log carries."""

    state: RecoveredState
    kv: KeyValueStore
    raft: RaftNode
    address_books: list[bytes]  # the snapshot's, then every configuration entry's, newest last


def recover_node(
    data_dir: Path,
    node_id: int,
    *,
    voters: tuple[int, ...],
    options: RaftOptions,
    rng: random.Random,
    log: Callable[..., Any],
    segment_bytes: int = SEGMENT_BYTES,
) -> RecoveredNode:
    """The store from the newest snapshot, and the core from it and the WAL after it.
    `voters`: the first configuration's; a rebuilt node (one that waits to be added)
    is left out of it. Logs `wal_recovered`. Raises WalCorruption as recover_state does."""
    started = time.monotonic()
    st = recover_state(data_dir, warn=lambda event, **f: log(event, level="warning", **f), segment_bytes=segment_bytes)
    kv = KeyValueStore()
    if st.meta is not None and st.image is not None:
        kv.restore(st.meta.index, st.image)
    if is_joining(data_dir):
        voters = tuple(v for v in voters if v != node_id)
    tail = st.wal_tail
    raft = RaftNode(
        node_id,
        voters,
        rng=rng,
        options=options,
        hard_state=tail.hard_state,
        entries=tail.entries,
        snapshot=st.meta,
        applied=st.meta.index if st.meta else 0,
        log=core_logger(log),
    )
    books = ([st.meta.addresses] if st.meta is not None and st.meta.addresses is not None else []) + [
        e.command for e in tail.entries if e.membership is not None and e.command is not None
    ]
    log(
        "wal_recovered",
        term=tail.hard_state.current_term,
        role=raft.role,
        segments=tail.segments,
        records=tail.records,
        entries=len(tail.entries),
        voted_for=tail.hard_state.voted_for,
        commit_index=tail.hard_state.commit_index,
        snapshot_index=st.meta.index if st.meta else 0,
        keys=len(kv.data),
        wal_floor=st.floor,
        torn_tail_bytes=tail.torn_tail_bytes,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    return RecoveredNode(st, kv, raft, books)
