"""The one place that knows whether the node's disk is full.

A write that finds the disk full (ENOSPC, EDQUOT) stalls the Ready driver
mid-Ready (raftproc.server.driver). Until the write goes through, the node is
frozen, and every room asks this object rather than keeping its own flag:

- the core must not be stepped, ticked or compacted (it raises mid-Ready): the
  ticker skips ticks, the peer transport drops frames (to the cluster the node
  looks partitioned, so a leader is replaced once its followers' election timers
  fire), and snapshot work that finishes on a thread waits for the thaw;
- clients get "disk_full" for everything but status;
- health, status, metrics and the live page say so.

The host retries the stalled write every DISK_RETRY_INTERVAL. Nothing
acknowledged depends on it, and once it succeeds the node goes on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[..., None]
DISK_RETRY_INTERVAL = 0.5  # seconds between attempts at a write that found the disk full


class DiskFreeze:
    def __init__(self, clock: Callable[[], float], log: Log) -> None:
        self.clock = clock
        self.log = log
        self.since: float | None = None  # the disk was full at this time (clock)

    @property
    def frozen(self) -> bool:
        return self.since is not None

    def freeze(self, error: str, wal_dir: str) -> None:
        self.since = self.clock()
        self.log(
            "disk_full",
            level="error",
            error=error,
            wal=wal_dir,
            action=f"refusing writes and peer messages; retrying the write every {DISK_RETRY_INTERVAL} s",
        )

    def thaw(self) -> None:
        assert self.since is not None
        seconds = round(self.clock() - self.since, 1)
        self.since = None
        self.log("disk_write_resumed", seconds_stalled=seconds)
