"""The core's clock: a timer every `tick_ms` ticks the core, on the injected clock.

A late timer (a GC pause, SIGSTOP, a frozen disk) ticks the node once, not a burst
of catch-up ticks that would start an election the moment the process resumes;
but the read lease's clock hears the whole time that passed. No tick reaches the
core while the disk is full (raftproc.server.disk): it is mid-Ready.

Each tick also looks at the disk's speed: a leader whose fsync takes longer than
twice the longest election timeout steps down. It cannot promise its own writes
in time, and with the sync on a thread it would otherwise go on heartbeating, so
nobody would replace it. (With the sync inline the loop itself is stuck; the
followers elect another leader and this node hears so once the sync returns, and
steps down then at the latest.)
"""

from __future__ import annotations

from collections.abc import Callable

from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER
from raftproc.runtime.loop import EventLoop
from raftproc.runtime.wal import WriteAheadLog
from raftproc.server.disk import DiskFreeze


class Ticker:
    def __init__(
        self,
        *,
        raft: RaftNode,
        loop: EventLoop,
        wal: WriteAheadLog,
        disk: DiskFreeze,
        tick_ms: int,
        election_timeout_max: int,
        on_tick: Callable[[], None],
    ) -> None:
        """`on_tick()` runs after each tick the core took (the incarnation registry settles)."""
        self.raft = raft
        self.loop = loop
        self.wal = wal
        self.disk = disk
        self.on_tick = on_tick
        self.interval = tick_ms / 1000
        # Twice the longest election timeout: a loaded 2-core machine saw single fsyncs
        # of 150-250 ms (the shortest timeout is 150 ms), and a leader that stepped
        # down for each churned for nothing.
        self.slow_sync_limit = 2 * election_timeout_max * self.interval
        self.last_tick_at = loop.clock()
        self._next_tick = self.last_tick_at + self.interval
        loop.call_at(self._next_tick, self._tick)

    def _tick(self) -> None:
        if not self.disk.frozen:
            self._check_disk_speed()
            self.catch_up()
            self.on_tick()
        self._next_tick = max(self._next_tick + self.interval, self.loop.clock())
        self.loop.call_at(self._next_tick, self._tick)

    def catch_up(self) -> None:
        """Tick the core once for the time since its last tick (see the module's docstring)."""
        now = self.loop.clock()
        elapsed = max(1, round((now - self.last_tick_at) / self.interval))
        self.last_tick_at = now
        self.raft.tick(elapsed)

    def _check_disk_speed(self) -> None:
        slowest = self.wal.slowest_sync()
        if slowest > self.slow_sync_limit and self.raft.role == LEADER:
            self.raft.step_down(
                f"a WAL sync took {slowest * 1000:.0f} ms, over twice the longest election timeout ({self.slow_sync_limit * 1000:.0f} ms)"
            )
