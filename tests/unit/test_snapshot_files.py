"""Snapshot files, the WAL around them, and the chunked transfer, without processes."""

from __future__ import annotations

import random
from pathlib import Path

import cbor2
import pytest

from raftproc.core.messages import Entry, Membership, SnapshotMeta
from raftproc.core.ready import HardState, Ready
from raftproc.kv.commands import Command
from raftproc.kv.state_machine import KeyValueStore
from raftproc.runtime.snapshot import MAGIC, SnapshotCorrupt, load_newest, read_meta, read_snapshot, write_snapshot
from raftproc.runtime.transfer import SnapshotReceiver, SnapshotSender
from raftproc.runtime.wal import HEADER, WalCorruption, WriteAheadLog, frame_record

META = Membership((1, 2, 3), learners=(4,))


def store_with(n: int, *, client: int = 7) -> KeyValueStore:
    kv = KeyValueStore()
    for i in range(1, n + 1):
        kv.apply(i, Command("set", f"key{i % 50}", f"v{i}", None, client, i).encode())
    return kv


def test_round_trip_keeps_data_and_sessions(tmp_path):
    kv = store_with(300)
    snap = write_snapshot(tmp_path, SnapshotMeta(300, 4, META), kv.image(), floor=0)
    meta, image = read_snapshot(snap.path)
    assert meta == SnapshotMeta(300, 4, META)
    restored = KeyValueStore()
    restored.restore(300, image)
    assert restored.data == kv.data and restored.state_digest() == kv.state_digest()
    # Exactly-once survives: the retry of the last request gets its first answer back,
    # an older one is refused, and the states keep agreeing as both go on.
    retry = Command("set", "key0", "other", None, 7, 300).encode()
    assert restored.apply(301, retry) == kv.apply(301, retry) == {"ok": True}
    assert restored.data["key0"] == kv.data["key0"] == "v300"
    assert restored.state_digest() == kv.state_digest()


def test_snapshot_written_before_membership_changes_still_reads(tmp_path):
    """Older files hold only the voters in their metadata; a node upgraded over
    such a data directory must restore them, not call them corrupt."""
    kv = store_with(20)
    snap = write_snapshot(tmp_path, SnapshotMeta(20, 2, Membership((1, 2, 3))), kv.image(), floor=0)
    data = snap.path.read_bytes()
    first = len(MAGIC) + HEADER.size + HEADER.unpack_from(data, len(MAGIC))[0]
    old_meta = frame_record(cbor2.dumps({"meta": {"index": 20, "term": 2, "voters": [1, 2, 3]}}))
    snap.path.write_bytes(data[: len(MAGIC)] + old_meta + data[first:])
    meta, image = read_snapshot(snap.path)
    assert meta == SnapshotMeta(20, 2, Membership((1, 2, 3)))
    restored = KeyValueStore()
    restored.restore(20, image)
    assert restored.data == kv.data


def test_snapshot_with_the_stores_old_digest_still_reads(tmp_path):
    """Files written while the store kept a log digest of its own end with it (and,
    older still, with a state sum); neither is needed now."""
    kv = store_with(20)
    snap = write_snapshot(tmp_path, SnapshotMeta(20, 2, META), kv.image(), floor=0)
    data = snap.path.read_bytes()
    pos, last = len(MAGIC), len(MAGIC)
    while pos < len(data):
        last, pos = pos, pos + HEADER.size + HEADER.unpack_from(data, pos)[0]
    end = cbor2.loads(data[last + HEADER.size :])["end"]
    old_end = frame_record(cbor2.dumps({"end": {**end, "digest": "ab" * 16, "state_sum": 12345}}))
    snap.path.write_bytes(data[:last] + old_end)
    meta, image = read_snapshot(snap.path)
    assert meta == SnapshotMeta(20, 2, META)
    restored = KeyValueStore()
    restored.restore(20, image)
    assert restored.data == kv.data and restored.sessions == kv.sessions


def test_every_flipped_byte_is_detected(tmp_path):
    snap = write_snapshot(tmp_path, SnapshotMeta(10, 1, META), store_with(10).image(), floor=0)
    good = snap.path.read_bytes()
    rng = random.Random(3)
    for pos in rng.sample(range(len(good)), 40) + [len(good) - 1]:
        bad = bytearray(good)
        bad[pos] ^= 0x41
        snap.path.write_bytes(bytes(bad))
        with pytest.raises(SnapshotCorrupt):
            read_snapshot(snap.path)
        with pytest.raises(SnapshotCorrupt):
            read_meta(snap.path)
    snap.path.write_bytes(good[: len(good) - 5])  # torn: no end record
    with pytest.raises(SnapshotCorrupt):
        read_meta(snap.path)


def test_corrupt_newest_falls_back_to_the_older_snapshot(tmp_path):
    old = write_snapshot(tmp_path, SnapshotMeta(10, 1, META), store_with(10).image(), floor=0)
    new = write_snapshot(tmp_path, SnapshotMeta(20, 1, META), store_with(20).image(), floor=0)
    data = bytearray(new.path.read_bytes())
    data[len(data) // 2] ^= 1
    new.path.write_bytes(bytes(data))
    warnings = []
    chosen, meta, _ = load_newest(tmp_path, lambda event, **f: warnings.append((event, f)))
    assert chosen.path == old.path and meta.index == 10
    assert warnings[0][0] == "snapshot_corrupt" and Path(tmp_path / warnings[0][1]["moved_to"]).exists()


def entries(lo: int, hi: int, term: int) -> tuple[Entry, ...]:
    return tuple(Entry(term, i, b"c%d" % i) for i in range(lo, hi + 1))


def test_wal_replays_only_what_follows_the_snapshot_and_respects_truncations(tmp_path):
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=10**9)
    wal.append(Ready(hard_state=HardState(1, 1, 0), entries=entries(1, 10, 1)))
    wal.append(Ready(hard_state=HardState(2, 2, 0), entries=entries(5, 6, 2)))  # replaces 5..10
    wal.append(Ready(entries=entries(7, 8, 2)))
    wal.close()
    # A snapshot at 7 covers 1..7; entry 8 (term 2) follows, and the stale 9, 10 of
    # term 1 that the truncation at 5 removed must not come back.
    _, rec = WriteAheadLog.open(tmp_path, base=7)
    assert [(e.index, e.term) for e in rec.entries] == [(8, 2)]
    assert rec.hard_state == HardState(2, 2, 0)
    # A snapshot at 20, past everything: the WAL adds nothing, yet keeps its hard state.
    _, rec = WriteAheadLog.open(tmp_path, base=20)
    assert rec.entries == [] and rec.hard_state.current_term == 2


def test_segments_below_the_floor_give_hard_state_but_no_entries(tmp_path):
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=10**9)
    wal.append(Ready(hard_state=HardState(3, 1, 0), entries=entries(1, 30, 1)))
    floor = wal.cut()  # a follower installing a snapshot at 12 of another history
    wal.append(Ready(hard_state=HardState(4, None, 12), entries=entries(13, 14, 4)))
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path, base=12, floor=floor)
    assert [(e.index, e.term) for e in rec.entries] == [(13, 4), (14, 4)]
    assert rec.hard_state == HardState(4, None, 12)
    # Falling back to an older snapshot behind the floor cannot work: it says so.
    with pytest.raises(WalCorruption, match="missing"):
        WriteAheadLog.open(tmp_path, base=5, floor=floor)


def test_remove_covered_deletes_old_segments_but_keeps_term_and_vote(tmp_path):
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=200)
    wal.append(Ready(hard_state=HardState(5, 2, 0)))
    for i in range(1, 41):
        wal.append(Ready(entries=(Entry(5, i, b"x" * 40),)))
    assert len(wal.segments()) > 5
    removed = wal.remove_covered(30)
    assert removed and len(wal.segments()) >= 1
    wal.close()
    _, rec = WriteAheadLog.open(tmp_path, base=30)
    assert rec.hard_state.current_term == 5 and rec.hard_state.voted_for == 2
    assert [e.index for e in rec.entries] == list(range(31, 41))


def snapshot_file(tmp_path: Path, n: int = 2000):
    src = tmp_path / "leader"
    src.mkdir()
    return write_snapshot(src, SnapshotMeta(n, 3, META), store_with(n).image(), floor=0)


def run_transfer(snap, dest: Path, *, rng: random.Random, loss: float, dup: float, reorder: float):
    """Carry chunks and acks over a faulty link until the sender finishes. Returns
    (sender outcome, what the receiver completed)."""
    receiver = SnapshotReceiver(dest, 2, sync=False)
    wire: list = []
    sender = SnapshotSender(me=1, peer=2, term=5, snap=snap, chunk_bytes=700, window=2800, send=lambda c: wire.append(c) or True, now=0.0)
    sender.pump()
    done = None
    steps = 0
    while sender.outcome is None and steps < 10_000:
        steps += 1
        if not wire:
            break  # everything lost: the host's stall timer would fail the transfer
        if len(wire) > 1 and rng.random() < reorder:
            i = rng.randrange(1, len(wire))
            wire[0], wire[i] = wire[i], wire[0]
        chunk = wire.pop(0)
        if rng.random() < loss:
            continue
        copies = 2 if rng.random() < dup else 1
        for _ in range(copies):
            ack, completed, _ = receiver.on_chunk(chunk, current_term=5)
            done = completed or done
            sender.on_ack(ack, now=float(steps))
    if sender.outcome is None:
        sender.finish(False)
    return sender.outcome, done


@pytest.mark.parametrize("seed", range(12))
def test_chunk_loss_duplication_and_reordering_never_yield_a_wrong_file(tmp_path, seed):
    snap = snapshot_file(tmp_path)
    dest = tmp_path / "follower"
    dest.mkdir()
    rng = random.Random(seed)
    faults = dict(loss=0.05 * (seed % 3), dup=0.2 * (seed % 2), reorder=0.15 * (seed % 4 > 1))
    outcome, done = run_transfer(snap, dest, rng=rng, **faults)
    if outcome:
        assert done is not None and done.path.read_bytes() == snap.path.read_bytes()
    else:
        assert done is None
        # The leader starts over; on a clean link the fresh transfer completes.
        outcome, done = run_transfer(snap, dest, rng=rng, loss=0, dup=0, reorder=0)
        assert outcome and done.path.read_bytes() == snap.path.read_bytes()
    assert not list(dest.glob("incoming-*")) or done.path.exists()
    if seed == 0:
        assert faults == dict(loss=0, dup=0, reorder=0) and outcome  # the clean case completes first time


def whole_transfer(tmp_path: Path):
    """A small snapshot, a follower's receiver, and every chunk a sender sends for it."""
    snap = snapshot_file(tmp_path, 50)
    dest = tmp_path / "follower"
    dest.mkdir()
    chunks: list = []
    sender = SnapshotSender(me=1, peer=2, term=5, snap=snap, chunk_bytes=300, window=10**6, send=lambda c: chunks.append(c) or True, now=0)
    sender.pump()
    return dest, SnapshotReceiver(dest, 2, sync=False), sender, chunks


def test_receiver_refuses_stale_terms_and_unknown_transfers(tmp_path):
    _, receiver, sender, chunks = whole_transfer(tmp_path)
    ack, done, why = receiver.on_chunk(chunks[1], current_term=5)  # a follower restarted mid-transfer
    assert not ack.ok and done is None and "not in progress" in why
    ack, done, why = receiver.on_chunk(chunks[0], current_term=6)  # from a deposed leader
    assert not ack.ok and "term" in why
    for c in chunks:
        ack, done, why = receiver.on_chunk(c, current_term=5)
        assert ack.ok and why is None
    assert done is not None and done.meta.index == 50
    sender.finish(True)


def test_a_transfer_that_arrives_corrupted_is_refused(tmp_path):
    dest, receiver, sender, chunks = whole_transfer(tmp_path)
    sender.finish(False)
    from dataclasses import replace

    chunks[2] = replace(chunks[2], data=bytes(b ^ 1 for b in chunks[2].data))
    results = [receiver.on_chunk(c, current_term=5) for c in chunks]
    ack, done, why = results[-1]
    assert not ack.ok and done is None and "does not verify" in why
    assert not list(dest.glob("incoming-*"))


def test_state_digest_is_kept_incrementally_and_ignores_history():
    a, b = KeyValueStore(), KeyValueStore()
    ops_a = [("set", "x", "1"), ("set", "y", "2"), ("del", "x", None), ("set", "x", "3")]
    ops_b = [("set", "y", "0"), ("set", "x", "3"), ("set", "y", "2")]
    for i, (op, k, v) in enumerate(ops_a, start=1):
        a.apply(i, Command(op, k, v, None, 0, 0).encode())
    for i, (op, k, v) in enumerate(ops_b, start=1):
        b.apply(i, Command(op, k, v, None, 0, 0).encode())
    assert a.data == b.data and a.state_digest() == b.state_digest()
    b.apply(4, Command("set", "y", "9", None, 0, 0).encode())
    assert a.state_digest() != b.state_digest()
    b.apply(5, Command("cas", "y", "2", "9", 0, 0).encode())
    assert a.state_digest() == b.state_digest()


def test_a_retried_transfer_resumes_where_the_follower_stopped(tmp_path):
    snap = snapshot_file(tmp_path)
    dest = tmp_path / "follower"
    dest.mkdir()
    receiver = SnapshotReceiver(dest, 2, sync=False)
    first: list = []
    sender = SnapshotSender(me=1, peer=2, term=5, snap=snap, chunk_bytes=40, window=10**6, send=lambda c: first.append(c) or True, now=0)
    sender.pump()
    for chunk in first[:10]:  # 400 bytes arrive, then the connection breaks
        receiver.on_chunk(chunk, current_term=5)
    sender.finish(False)
    sent: list = []
    retry = SnapshotSender(me=1, peer=2, term=5, snap=snap, chunk_bytes=40, window=80, send=lambda c: sent.append(c) or True, now=1)
    retry.pump()
    done = None
    delivered: list[int] = []
    while sent and retry.outcome is None:
        chunk = sent.pop(0)
        delivered.append(chunk.offset)
        ack, completed, why = receiver.on_chunk(chunk, current_term=5)
        assert why is None
        done = completed or done
        retry.on_ack(ack, now=2)
    assert retry.outcome is True and done.path.read_bytes() == snap.path.read_bytes()
    # Only its first window went out again; then it jumped to where the follower was.
    assert sorted(o for o in delivered if o < 400) == [0, 40]


def test_compaction_keeps_a_tail_bounded_in_entries_and_in_bytes():
    from raftproc.core.log import RaftLog
    from raftproc.core.messages import Entry
    from raftproc.server.snapshots import compaction_index

    small = RaftLog([Entry(1, i, b"x" * 10) for i in range(1, 101)])
    assert compaction_index(small, 100, keep_entries=30, keep_bytes=10_000) == 70  # the entry count binds
    big = RaftLog([Entry(1, i, b"x" * 1_000_000) for i in range(1, 101)])
    assert compaction_index(big, 100, keep_entries=30, keep_bytes=4_500_000) == 96  # the bytes bind: 4 entries stay
    assert compaction_index(big, 100, keep_entries=30, keep_bytes=10) == 100  # nothing fits: compact everything


def test_members_incarnations_are_learned_through_the_log_kept_in_snapshots_and_dropped_on_removal(tmp_path):
    kv = store_with(10)
    for i, (node, incarnation) in enumerate(((1, 111), (2, 222), (2, 999)), start=11):
        assert kv.apply(i, Command("incarnation", str(node), str(incarnation)).encode()) == {"ok": True}
    assert kv.incarnations == {1: 111, 2: 222}, "the first record of a node wins"
    assert kv.apply(14, Command("incarnation", "x", "1").encode())["ok"] is False
    snap = write_snapshot(tmp_path, SnapshotMeta(14, 4, META, hash=bytes(16)), kv.image(), floor=0)
    meta, image = read_snapshot(snap.path)
    assert meta.hash == bytes(16) and image.incarnations == {1: 111, 2: 222}
    restored = KeyValueStore()
    restored.restore(14, image)
    restored.forget_incarnations((1, 3))
    assert restored.incarnations == {1: 111}, "node 2 left the configuration: it may come back rebuilt"
