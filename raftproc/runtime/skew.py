"""A node clock that runs fast or slow, for chaos and tests only.

Raft's timers and read leases run on each node's monotonic clock, and real clocks
do not all run at one rate. To try that, a node started with RAFTPROC_CLOCK_DIR in
its environment reads its clock rate from `<dir>/node-<id>.rate` (a number such as
1.04; absent or unreadable means 1.0). The file is read again at most every
RECHECK_S of real time, so a rate can change while the node runs, and the clock
stays monotonic across a change.

This is a test-only switch, like the WAL's power-loss mode, rather than
libfaketime. libfaketime would need a Debian package on every machine that runs
the suite, and it changes every clock in the process (TLS certificate checks,
log timestamps) as well as the one Raft reads. Here exactly the clock the loop,
the core's ticks and the read lease see is skewed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_DIR_ENV = "RAFTPROC_CLOCK_DIR"
RECHECK_S = 0.1
MIN_RATE, MAX_RATE = 0.5, 2.0  # a bad file must not stop a clock or race it


def clock_for(node_id: int) -> Callable[[], float]:
    """time.monotonic, unless the environment asks for a skewed clock."""
    directory = os.environ.get(CLOCK_DIR_ENV)
    if not directory:
        return time.monotonic
    return SkewedClock(Path(directory) / f"node-{node_id}.rate")


def write_rate(directory: Path, node_id: int, rate: float) -> None:
    """Set node `node_id`'s clock rate (atomically: the node never reads half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"node-{node_id}.rate.tmp"
    tmp.write_text(f"{rate}\n")
    tmp.replace(directory / f"node-{node_id}.rate")


class SkewedClock:
    def __init__(self, path: Path, real: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.real = real
        now = real()
        self.base_real = self.base_skewed = now
        self.rate = self._read_rate()
        self.checked = now

    def __call__(self) -> float:
        now = self.real()
        if now - self.checked >= RECHECK_S:
            self.checked = now
            rate = self._read_rate()
            if rate != self.rate:
                self.base_skewed = self._at(now)
                self.base_real = now
                self.rate = rate
        return self._at(now)

    def _at(self, now: float) -> float:
        return self.base_skewed + (now - self.base_real) * self.rate

    def _read_rate(self) -> float:
        try:
            rate = float(self.path.read_text().strip())
        except (OSError, ValueError):
            return 1.0
        return min(max(rate, MIN_RATE), MAX_RATE)
