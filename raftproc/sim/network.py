"""The simulated network between the nodes' hosts.

A message sent is put in flight with a random delay (so messages reorder); the
network may lose it or, now and then, deliver it twice. Links can be cut one way
(`blocked`): what crosses a cut link is lost, and its sender's transport hears of
it (raftproc.sim.cluster delivers and reports). An InstallSnapshot carries the
sender's newest stored snapshot as a whole, held here until it is delivered.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator

from raftproc.core.messages import Entry, InstallSnapshot, Message, NodeId
from raftproc.sim.node import SimNode
from raftproc.sim.stats import SimStats
from raftproc.sim.timeline import Timeline

SnapshotData = tuple[Entry, ...]


class SimNetwork:
    def __init__(
        self, rng: random.Random, timeline: Timeline, stats: SimStats, *, delays: tuple[int, int], loss: float, duplicate: float
    ) -> None:
        """`rng` is the run's one Random: every draw happens in the order it always did."""
        self._rng = rng
        self._timeline = timeline
        self._stats = stats
        self._min_delay, self._max_delay = delays
        self.loss = loss
        self.duplicate = duplicate
        # Links cut, as (sender, receiver): a partition, or one-way cuts.
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        # (due step, send sequence number, message): a heap.
        self._in_flight: list[tuple[int, int, Message]] = []
        self._seq = 0
        # Snapshot data travelling with an InstallSnapshot, by its sequence number.
        self._snapshot_data: dict[int, SnapshotData] = {}

    def send(self, sender: SimNode, msg: Message) -> None:
        self._stats.messages_sent += 1
        if isinstance(msg, InstallSnapshot):
            self._send_snapshot(sender, msg)
            return
        if self.loses():
            self._stats.messages_dropped += 1
            return
        copies = 2 if self._rng.random() < self.duplicate else 1
        for _ in range(copies):
            self._put(self._rng.randint(self._min_delay, self._max_delay), msg)

    def _send_snapshot(self, sender: SimNode, msg: InstallSnapshot) -> None:
        """The host streams its newest stored snapshot, which covers at least what the
        core asked for; it arrives whole or the sender hears that it failed."""
        st = sender.storage
        assert st.snapshot is not None and st.snapshot.index >= msg.snapshot.index
        self._snapshot_data[self._seq + 1] = st.snapshot_data
        delay = self._rng.randint(self._min_delay, self._max_delay * 3)
        self._put(delay, InstallSnapshot(src=msg.src, dst=msg.dst, term=msg.term, snapshot=st.snapshot))

    def _put(self, delay: int, msg: Message) -> None:
        self._seq += 1
        heapq.heappush(self._in_flight, (self._timeline.now + delay, self._seq, msg))

    def due(self) -> Iterator[tuple[Message, SnapshotData | None]]:
        """Messages due by now, in order, each with its snapshot data (an
        InstallSnapshot's) or None. Lazy: what delivering one sends, due at once,
        comes out in the same pass."""
        q = self._in_flight
        while q and q[0][0] <= self._timeline.now:
            _, seq, msg = heapq.heappop(q)
            yield msg, self._snapshot_data.pop(seq, None)

    def loses(self) -> bool:
        """This message is lost on the way (a draw of the run's Random)."""
        return self._rng.random() < self.loss

    def is_cut(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) in self.blocked

    def cut(self, side_a: set[NodeId], side_b: set[NodeId], *, both_ways: bool) -> None:
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                if both_ways:
                    self.blocked.add((b, a))

    def heal(self) -> None:
        """No more cut links, loss or duplication."""
        self.blocked.clear()
        self.loss = 0.0
        self.duplicate = 0.0
