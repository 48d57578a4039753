"""The test-only skewed clock (raftproc.runtime.skew)."""

from __future__ import annotations

import time

from raftproc.runtime import skew
from raftproc.runtime.skew import SkewedClock, clock_for, write_rate


class FakeReal:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_clock_runs_at_the_rate_in_its_file_and_stays_monotonic_across_changes(tmp_path):
    real = FakeReal()
    write_rate(tmp_path, 3, 1.5)
    clock = SkewedClock(tmp_path / "node-3.rate", real)
    start = clock()
    real.t += 10
    assert clock() - start == 15
    write_rate(tmp_path, 3, 0.5)
    real.t += 1  # the new rate is read at the next check, from that moment on
    at_change = clock()
    real.t += 10
    assert clock() - at_change == 5
    readings = []
    for rate in (2.0, 0.6, 1.0):
        write_rate(tmp_path, 3, rate)
        real.t += skew.RECHECK_S
        readings.append(clock())
    assert readings == sorted(readings)


def test_a_missing_or_wild_rate_file_is_real_time_or_clamped(tmp_path):
    real = FakeReal()
    clock = SkewedClock(tmp_path / "node-1.rate", real)
    real.t += 4
    assert clock() == 104
    (tmp_path / "node-1.rate").write_text("1e9\n")
    real.t += 1
    base = clock()
    real.t += 1
    assert clock() - base == skew.MAX_RATE


def test_without_the_switch_the_node_reads_the_real_monotonic_clock(monkeypatch):
    monkeypatch.delenv(skew.CLOCK_DIR_ENV, raising=False)
    assert clock_for(1) is time.monotonic
