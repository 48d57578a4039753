"""A node's durable state as it is found at startup: the newest valid snapshot,
then the WAL after it. Used by the node host and by tools that check a data
directory after a run (chaos verdicts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftproc.core.messages import SnapshotMeta
from raftproc.kv.state_machine import KvImage
from raftproc.runtime import snapshot
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
