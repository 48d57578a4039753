"""Snapshot files: the key-value state machine at one applied index, on disk.

On-disk format
--------------
A snapshot is one file, `snap-<index>-<term>-w<floor>.snap` (zero-padded, so names
sort by index), holding a magic line and then records framed exactly like WAL
records (4-byte length, CRC32 over length and body, CBOR body):

    {"meta": {"index": I, "term": T, "membership": [voters, outgoing, learners],
              "context": bytes | None, "hash": bytes}}   (older files: "voters": [...],
              no "hash": still read; the log's chain link at I is then unknown)
    {"kv": [[key, value], ...]}                      (any number, bounded size)
    {"sessions": [[client, seq, result], ...]}
    {"incarnations": [[node, incarnation], ...]}      (absent in older files)
    {"end": {"records": N, "keys": K}}                (older files: also "digest")

The `end` record makes a complete file recognisable: a file without it, or with a
record that fails its CRC, is corrupt. Which log the snapshot's state came from is
the chain link in its metadata (`hash`).

`floor` (the `w` part of the name) is the first WAL segment whose entries count
together with this snapshot. A follower that installs a leader's snapshot drops
its whole log; it cuts a new WAL segment first and names it as the floor, so the
entries it held before can never come back on a restart, whether or not the old
segments were deleted yet.

Writing (write_snapshot)
------------------------
1. write everything to `<name>.tmp`;  2. fsync it;  3. rename it to `<name>`;
4. fsync the directory. Only after step 4 may WAL segments the snapshot covers be
deleted (the host does that). A crash before step 3 leaves a `.tmp` that startup
removes; a crash after it leaves a complete snapshot whose entries are also
still in the WAL. Either way nothing is lost. `failpoint(step)` runs between the
steps; tests replace it to kill the process exactly there.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from raftproc.core.messages import SnapshotMeta
from raftproc.kv.state_machine import KvImage
from raftproc.runtime.entries import decode_membership, encode_membership
from raftproc.runtime.wal import HEADER, MAX_RECORD, frame_record, fsync_dir, write_all

MAGIC = b"RAFTPROC-SNAPSHOT-1\n"
KV_BATCH = 4096  # pairs per record: small enough that encoding one never stalls the loop thread
TMP_SUFFIX = ".tmp"
INCOMING_PREFIX = "incoming-"

Warn = Callable[..., None]


class SnapshotCorrupt(Exception):
    """A snapshot file that is incomplete or fails a checksum."""


# Crash tests set this to kill the process at one step. A variable rather than a
# function they replace: a compiled module calls its own functions directly, but
# reads its variables from the module each time.
failpoint_hook: Callable[[str], None] | None = None


def failpoint(step: str) -> None:
    """Between the steps of writing, installing or compacting after a snapshot."""
    hook = failpoint_hook
    if hook is not None:
        hook(step)


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    path: Path
    index: int
    term: int
    floor: int
    size: int


def snapshot_name(index: int, term: int, floor: int) -> str:
    return f"snap-{index:020d}-{term:020d}-w{floor:08d}.snap"


def parse_name(path: Path) -> tuple[int, int, int] | None:
    parts = path.name.removesuffix(".snap").split("-")
    if len(parts) != 4 or parts[0] != "snap" or not path.name.endswith(".snap"):
        return None
    try:
        return int(parts[1]), int(parts[2]), int(parts[3].lstrip("w"))
    except ValueError:
        return None


def list_snapshots(directory: Path) -> list[SnapshotFile]:
    """Every snapshot file by its name, newest (highest index) first; not validated."""
    out = []
    for path in directory.glob("snap-*.snap"):
        parsed = parse_name(path)
        if parsed is not None:
            out.append(SnapshotFile(path, *parsed, path.stat().st_size))
    return sorted(out, key=lambda s: (s.index, s.term, s.floor), reverse=True)


def wal_floor(directory: Path) -> int:
    """The highest floor any snapshot file names, even one found corrupt: entries in
    WAL segments below it were dropped by an install and must stay dropped."""
    floor = 0
    for path in directory.glob("snap-*.snap*"):
        parsed = parse_name(path.with_name(path.name.removesuffix(".corrupt")))
        if parsed is not None:
            floor = max(floor, parsed[2])
    return floor


def remove_older(directory: Path, keep: list[Path]) -> list[str]:
    """Delete snapshot files (not corrupt ones, kept for inspection) except `keep`."""
    removed = []
    for snap in list_snapshots(directory):
        if snap.path not in keep:
            snap.path.unlink(missing_ok=True)
            removed.append(snap.path.name)
    return removed


def remove_temporaries(directory: Path) -> list[str]:
    """Half-written snapshots (ours or a leader's) from before a crash: never valid."""
    removed = []
    for path in list(directory.glob("*" + TMP_SUFFIX)):
        path.unlink()
        removed.append(path.name)
    return removed


# --- writing -------------------------------------------------------------------------


def write_snapshot(directory: Path, meta: SnapshotMeta, image: KvImage, *, floor: int, sync: bool = True) -> SnapshotFile:
    """Write `image` as the snapshot `meta` durably (see the module doc for the steps).
    Runs on a background thread: `image` must be a copy nobody else mutates."""
    name = snapshot_name(meta.index, meta.term, floor)
    final = directory / name
    tmp = directory / (name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = 0
        for chunk in _encode(meta, image):
            write_all(fd, chunk)
            size += len(chunk)
        failpoint("snapshot_written")
        if sync:
            os.fsync(fd)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not stay fuller by a half-written snapshot
        raise
    finally:
        os.close(fd)
    failpoint("snapshot_synced")
    os.rename(tmp, final)
    failpoint("snapshot_renamed")
    if sync:
        fsync_dir(directory)
    failpoint("snapshot_dir_synced")
    return SnapshotFile(final, meta.index, meta.term, floor, size)


def _encode(meta: SnapshotMeta, image: KvImage) -> Iterator[bytes]:
    yield MAGIC
    yield frame_record(
        cbor2.dumps(
            {
                "meta": {
                    "index": meta.index,
                    "term": meta.term,
                    "membership": encode_membership(meta.membership),
                    "context": meta.addresses,
                    "hash": meta.hash,
                }
            }
        )
    )
    records = 1
    batch: list[list[Any]] = []
    for key, value in image.data.items():
        batch.append([key, value])
        if len(batch) >= KV_BATCH:
            yield frame_record(cbor2.dumps({"kv": batch}))
            records += 1
            batch = []
    if batch:
        yield frame_record(cbor2.dumps({"kv": batch}))
        records += 1
    sessions = [[client, seq, result] for client, (seq, result) in image.sessions.items()]
    yield frame_record(cbor2.dumps({"sessions": sessions}))
    records += 1
    yield frame_record(cbor2.dumps({"incarnations": sorted(image.incarnations.items())}))
    records += 1
    end = {"records": records, "keys": len(image.data)}
    yield frame_record(cbor2.dumps({"end": end}))


# --- reading -------------------------------------------------------------------------


def read_snapshot(path: Path) -> tuple[SnapshotMeta, KvImage]:
    """Load and verify a whole snapshot file. Raises SnapshotCorrupt."""
    meta: SnapshotMeta | None = None
    data: dict[str, str | bytes] = {}
    sessions: dict[int, tuple[int, Any]] = {}
    incarnations: dict[int, int] = {}  # absent from files written before they were kept
    records = 0
    for offset, raw in _records(path):
        body = _decode(path, offset, raw)
        records += 1
        if meta is None:
            meta = _meta(path, body)
        elif "kv" in body:
            data.update(body["kv"])
        elif "sessions" in body:
            sessions = {c: (seq, result) for c, seq, result in body["sessions"]}
        elif "incarnations" in body:
            try:
                incarnations = {int(n): int(i) for n, i in body["incarnations"]}
            except (TypeError, ValueError):
                raise SnapshotCorrupt(f"{path}: incarnations record is not a table of ids") from None
        elif "end" in body:
            end = body["end"]
            if end.get("records") != records - 1 or end.get("keys") != len(data):
                raise SnapshotCorrupt(f"{path}: end record counts {end} do not match what precedes it")
            # (Older snapshots also carry the store's own log digest, "digest", and
            # "state_sum"; neither is needed: the chain link in the metadata says
            # which log was applied, and the state digest is computed when asked.)
            return meta, KvImage(data, sessions, incarnations)
        else:
            raise SnapshotCorrupt(f"{path}: unknown record {sorted(body)}")
    raise SnapshotCorrupt(f"{path}: no end record (incomplete file)")


def read_meta(path: Path) -> SnapshotMeta:
    """Verify the whole file (every checksum, the end record) and return its meta.
    Decodes only the first and last records, so it is quick on a large snapshot."""
    meta: SnapshotMeta | None = None
    records = 0
    last: tuple[int, bytes] | None = None
    for offset, raw in _records(path):
        records += 1
        if meta is None:
            meta = _meta(path, _decode(path, offset, raw))
        last = (offset, raw)
    end = _decode(path, *last).get("end") if last is not None and records > 1 else None
    if meta is None or not isinstance(end, dict):
        raise SnapshotCorrupt(f"{path}: no end record (incomplete file)")
    if end.get("records") != records - 1:
        raise SnapshotCorrupt(f"{path}: end record counts do not match")
    return meta


def _meta(path: Path, body: dict) -> SnapshotMeta:
    try:
        m = body["meta"]
        context = m.get("context")
        if context is not None and not isinstance(context, bytes):
            raise ValueError("context is not bytes")
        if "membership" in m:
            membership = decode_membership(m["membership"])
        else:  # written before membership changes: the voters alone
            membership = decode_membership([m["voters"], [], []])
        link = m.get("hash")
        if link is not None and not (isinstance(link, bytes) and len(link) == 16):
            raise ValueError("hash is not a 16-byte chain link")
        meta = SnapshotMeta(int(m["index"]), int(m["term"]), membership, context, link)
    except (KeyError, TypeError, ValueError):
        raise SnapshotCorrupt(f"{path}: first record is not snapshot metadata") from None
    if meta.index < 1 or meta.term < 1:
        raise SnapshotCorrupt(f"{path}: impossible snapshot position {meta.term}/{meta.index}")
    return meta


def _decode(path: Path, offset: int, raw: bytes) -> dict:
    try:
        decoded = cbor2.loads(raw)
    except Exception as e:
        raise SnapshotCorrupt(f"{path}: undecodable record at offset {offset}: {e}") from None
    if not isinstance(decoded, dict):
        raise SnapshotCorrupt(f"{path}: record at offset {offset} is not a map")
    return decoded


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, body) of every record, each checked against its CRC."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise SnapshotCorrupt(f"{path}: not a raftproc snapshot (bad magic)")
        offset = len(MAGIC)
        while True:
            header = f.read(HEADER.size)
            if not header:
                return
            if len(header) < HEADER.size:
                raise SnapshotCorrupt(f"{path}: partial record header at offset {offset}")
            length, crc = HEADER.unpack(header)
            if length > MAX_RECORD:
                raise SnapshotCorrupt(f"{path}: impossible record length {length} at offset {offset}")
            body = f.read(length)
            if len(body) < length or zlib.crc32(body, zlib.crc32(header[:4])) != crc:
                raise SnapshotCorrupt(f"{path}: checksum mismatch in the record at offset {offset}")
            yield offset, body
            offset += HEADER.size + length


def load_newest(directory: Path, warn: Warn) -> tuple[SnapshotFile, SnapshotMeta, KvImage] | None:
    """The newest snapshot that verifies. A corrupt one is reported (and renamed
    aside, so it is never chosen again) and the next older one is tried; the caller
    checks that the WAL still holds the log behind the one chosen."""
    for snap in list_snapshots(directory):
        try:
            meta, image = read_snapshot(snap.path)
        except (SnapshotCorrupt, OSError) as e:
            aside = snap.path.with_name(snap.path.name + ".corrupt")
            snap.path.rename(aside)
            warn("snapshot_corrupt", file=snap.path.name, error=str(e), moved_to=aside.name)
            continue
        if (meta.index, meta.term) != (snap.index, snap.term):
            warn("snapshot_corrupt", file=snap.path.name, error=f"name says {snap.term}/{snap.index}, contents {meta.term}/{meta.index}")
            continue
        return snap, meta, image
    return None
