"""The write-ahead log: round trips, torn tails at every offset, corruption."""

from __future__ import annotations

import pytest

from raftproc.core import Entry, HardState, Ready
from raftproc.runtime.wal import WalCorruption, WriteAheadLog, encode_record


def ready(hs=None, *entries):
    return Ready(hard_state=hs, entries=tuple(entries))


def write_three(path):
    wal, _ = WriteAheadLog.open(path)
    wal.append(ready(HardState(1, 1, 0), Entry(1, 1, None), Entry(1, 2, b"a")))
    wal.append(ready(HardState(1, 1, 2), Entry(1, 3, b"b")))
    wal.append(ready(HardState(2, None, 2), Entry(2, 3, b"c"), Entry(2, 4, b"d")))
    wal.close()


def test_wal_round_trip_replays_hard_state_and_replaced_entries(tmp_path):
    write_three(tmp_path)
    _, rec = WriteAheadLog.open(tmp_path)
    assert rec.hard_state == HardState(2, None, 2)
    assert [(e.term, e.index, e.command) for e in rec.entries] == [(1, 1, None), (1, 2, b"a"), (2, 3, b"c"), (2, 4, b"d")]
    assert rec.records == 4 and rec.torn_tail_bytes == 0  # three Readys after the opening hard state


def test_wal_torn_last_record_at_every_offset_keeps_everything_before(tmp_path):
    write_three(tmp_path / "full")
    seg = next((tmp_path / "full").glob("wal-*.log"))
    data = seg.read_bytes()
    last_len = len(encode_record(ready(HardState(2, None, 2), Entry(2, 3, b"c"), Entry(2, 4, b"d"))))
    start = len(data) - last_len
    for cut in range(start, len(data)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(data[:cut])
        warnings = []
        _, rec = WriteAheadLog.open(d, warn=lambda event, **f: warnings.append((event, f)))
        assert rec.hard_state == HardState(1, 1, 2), cut
        assert [e.command for e in rec.entries] == [None, b"a", b"b"], cut
        if cut > start:
            assert warnings and warnings[0][0] == "wal_torn_tail_truncated" and warnings[0][1]["offset"] == start
            assert (d / seg.name).stat().st_size == start  # the torn bytes are cut off for good
        # After recovery the log appends cleanly where the good records end.
        wal, _ = WriteAheadLog.open(d)
        wal.append(ready(None, Entry(1, 4, b"z")))
        wal.close()
        _, again = WriteAheadLog.open(d)
        assert [e.command for e in again.entries][-1] == b"z"


def test_wal_zero_filled_tail_is_torn(tmp_path):
    write_three(tmp_path)
    seg = next(tmp_path.glob("wal-*.log"))
    with open(seg, "ab") as f:
        f.write(b"\0" * 100)
    _, rec = WriteAheadLog.open(tmp_path)
    assert len(rec.entries) == 4 and rec.torn_tail_bytes == 100


@pytest.mark.parametrize("record", [0, 1])
def test_wal_flipped_bit_in_an_earlier_record_refuses_to_start(tmp_path, record):
    write_three(tmp_path)
    seg = next(tmp_path.glob("wal-*.log"))
    data = bytearray(seg.read_bytes())
    first = len(encode_record(ready(HardState(1, 1, 0), Entry(1, 1, None), Entry(1, 2, b"a"))))
    offset = 12 if record == 0 else first + 12
    data[offset] ^= 0x04
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        WriteAheadLog.open(tmp_path)
    assert seg.name in str(err.value) and "offset" in str(err.value)
    assert seg.read_bytes() == bytes(data)  # nothing was truncated


def test_wal_bad_checksum_in_a_complete_last_record_is_corruption_not_torn(tmp_path):
    write_three(tmp_path)
    seg = next(tmp_path.glob("wal-*.log"))
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorruption):
        WriteAheadLog.open(tmp_path)


def test_wal_rotates_segments_and_replays_across_them(tmp_path):
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=200)
    for i in range(1, 41):
        wal.append(ready(HardState(1, 1, i - 1), Entry(1, i, b"x" * 20)))
    wal.close()
    assert len(list(tmp_path.glob("wal-*.log"))) > 3
    _, rec = WriteAheadLog.open(tmp_path, segment_bytes=200)
    assert len(rec.entries) == 40 and rec.hard_state.commit_index == 39


def test_wal_torn_tail_in_an_earlier_segment_is_corruption(tmp_path):
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=100)
    for i in range(1, 10):
        wal.append(ready(None, Entry(1, i, b"y" * 30)))
    wal.close()
    first = sorted(tmp_path.glob("wal-*.log"))[0]
    first.write_bytes(first.read_bytes()[:-5])
    with pytest.raises(WalCorruption):
        WriteAheadLog.open(tmp_path)


def test_wal_power_loss_mode_keeps_unsynced_bytes_in_the_process(tmp_path):
    wal, _ = WriteAheadLog.open(tmp_path, power_loss=True)
    wal.append(ready(HardState(1, 1, 0), Entry(1, 1, b"a")))  # synced: on disk
    wal.append(ready(HardState(1, 1, 1)))  # commit only: written, not synced
    seg = next(tmp_path.glob("wal-*.log"))
    synced_size = seg.stat().st_size
    assert synced_size > 0
    _, rec = WriteAheadLog.open(tmp_path)  # what a power cut now would leave
    assert rec.hard_state == HardState(1, 1, 0) and len(rec.entries) == 1
    wal.append(ready(None, Entry(1, 2, b"b")))
    assert seg.stat().st_size > synced_size
    _, rec = WriteAheadLog.open(tmp_path)
    assert rec.hard_state == HardState(1, 1, 1) and len(rec.entries) == 2
