"""Raft messages between this node and its peers, both ways, over the peer links
(raftproc.server.peers).

Out: the Ready driver's Transport. An InstallSnapshot becomes a snapshot stream
(raftproc.server.snapshots); every other message goes over its peer's link. One
AppendEntries round trip per peer at a time is timed (sent, to the next answer
from that peer) for the metrics.

In: every admitted frame is stepped into the core, and snapshot chunks and
acknowledgements go to the snapshots room. While the disk is full the core is
mid-Ready (raftproc.server.disk): frames are dropped (the sender retries, as over
a lossy link) and broken links are told to the core after the thaw.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftproc.core.messages import AppendEntries, AppendEntriesResponse, InstallSnapshot, Message
from raftproc.core.node import RaftNode
from raftproc.core.ready import Ready
from raftproc.core.types import LEADER, CommittedConflict
from raftproc.runtime.histogram import Histogram
from raftproc.runtime.loop import EventLoop
from raftproc.runtime.transfer import SnapshotAck, SnapshotChunk
from raftproc.server.disk import DiskFreeze
from raftproc.server.peers import Delivered, FrameRefused, Peers
from raftproc.server.snapshots import Snapshots
from raftproc.server.trace import Tracer


class PeerTransport:
    def __init__(self, *, raft: RaftNode, peers: Peers, snapshots: Snapshots, loop: EventLoop, disk: DiskFreeze, tracer: Tracer) -> None:
        self.raft = raft
        self.peers = peers
        self.snapshots = snapshots
        self.loop = loop
        self.disk = disk
        self.tracer = tracer
        self.rtt: dict[int, Histogram] = {}
        self._timing: dict[int, float] = {}  # peer -> when the timed AppendEntries left
        self._unreachable_while_frozen: set[int] = set()
        peers.deliver_to(self)

    # --- out: the driver's Transport --------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            if isinstance(msg, InstallSnapshot):
                self.snapshots.send(msg)
            else:
                if isinstance(msg, AppendEntries) and msg.dst not in self._timing:
                    self._timing[msg.dst] = self.loop.clock()
                if self.tracer.watching:
                    self.tracer.sending(msg)
                self.peers.send(msg)

    def flush(self) -> None:
        self.loop.flush_now()

    def ready(self, rd: Ready) -> None:
        """The driver's hook before it sends anything of a Ready: configuration
        entries teach the address book their members' addresses, so links to new
        members can be dialled."""
        for entry in rd.entries:
            if entry.membership is not None:
                self.peers.learn(entry.command)
        if rd.entries and self.raft.role != LEADER:
            self.tracer.appended(rd.entries, self.raft.leader_id)

    # --- in: what the peer links deliver ------------------------------------------------

    def on_frame(self, frame: Delivered) -> None:
        if self.disk.frozen:
            return
        if isinstance(frame, SnapshotChunk):
            self.snapshots.on_chunk(frame)
        elif isinstance(frame, SnapshotAck):
            self.snapshots.on_ack(frame)
        else:
            if isinstance(frame, AppendEntriesResponse):
                self._answered(frame.src)
                self.tracer.received(frame)
            try:
                self.raft.step(frame)
            except CommittedConflict as e:
                raise FrameRefused(str(e)) from None

    def on_link_down(self, peer: int) -> None:
        self._timing.pop(peer, None)  # the link broke: that message may never be answered
        if self.disk.frozen:
            self._unreachable_while_frozen.add(peer)
        else:
            self.raft.report_unreachable(peer)
        self.snapshots.link_down(peer)

    def thawed(self) -> None:
        """The disk has room again: the core hears of the links that broke meanwhile."""
        for peer in sorted(self._unreachable_while_frozen):
            self.raft.report_unreachable(peer)
        self._unreachable_while_frozen.clear()

    def _answered(self, peer: int) -> None:
        sent = self._timing.pop(peer, None)
        if sent is not None:
            self.rtt.setdefault(peer, Histogram()).observe(self.loop.clock() - sent)
