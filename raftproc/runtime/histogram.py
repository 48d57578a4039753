"""A latency histogram cheap enough to fill on the hot path (an fsync, a round trip)
and read when a scrape asks: cumulative Prometheus-style buckets, in seconds."""

from __future__ import annotations

import bisect

# etcd's WAL fsync buckets (0.5 ms .. 8 s, doubling), which also fit round trips.
DEFAULT_BUCKETS = tuple(0.0005 * 2**i for i in range(15))


class Histogram:
    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(upper bound, observations at or below it)], ending with ("+Inf", count)."""
        out, running = [], 0
        # counts has one more slot than bounds: the overflow, counted under +Inf below.
        for bound, n in zip(self.bounds, self.counts[:-1], strict=True):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out
