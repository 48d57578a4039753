"""One simulated server: the slot a RaftNode runs in, and what outlives it.

The RaftNode and its Ready driver exist while the process runs (`node`, `driver`:
None while it is down); its storage, the view the invariants compare against and
the simulation's bookkeeping about it survive crashes and restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from raftproc.core.invariants import NodeView
from raftproc.core.messages import Entry, NodeId
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER
from raftproc.server.driver import Driver
from raftproc.sim.storage import MemoryStorage

# Something a node's transport learned, told to its core (raftproc.sim.cluster).
Report = Callable[[RaftNode], None]


class SimNode:
    __slots__ = (
        "id",
        "node",
        "driver",
        "storage",
        "view",
        "applied_index",
        "down_until",
        "received",
        "durable_floor",
        "retired",
        "full_until",
        "last_tick",
        "deferred",
        "rate",
    )

    def __init__(self, node_id: NodeId) -> None:
        self.id = node_id
        self.node: RaftNode | None = None
        self.driver: Driver | None = None
        self.storage = MemoryStorage()
        self.view: NodeView | None = None
        self.applied_index = 0
        self.down_until = 0
        # Snapshots that arrived whole and were stepped in, waiting for the Ready
        # that installs one: (index, term) -> data.
        self.received: dict[tuple[int, int], tuple[Entry, ...]] = {}
        # The highest committed index known to be in this node's storage: it must stay.
        self.durable_floor = 0
        # Not a member (a spare, or removed): shut down until it is added again.
        self.retired = False
        self.full_until = 0  # its disk is full until this step
        self.last_tick = 0  # the step of its last tick: a node that was frozen catches up
        self.rate = 1.0  # its clock's ticks per step: nodes' clocks do not run alike
        # What its transport learned while it was frozen (a snapshot stream's outcome,
        # a broken link), told to the core once it is live again, as the host does.
        self.deferred: list[Report] = []

    @property
    def live(self) -> bool:
        """Running and not frozen: a node whose Ready stalled on a full disk is
        neither ticked nor stepped nor asked anything until the write goes through
        (what the node's host does, raftproc.server.host)."""
        return self.node is not None and self.driver is not None and self.driver.stalled is None

    @property
    def raft(self) -> RaftNode:
        """The running core, for callers that know the node runs."""
        node = self.node
        assert node is not None, f"node {self.id} is down"
        return node


def live_leaders(nodes: Iterable[SimNode]) -> list[SimNode]:
    """The live nodes that take themselves for leader, stale or not."""
    return [sn for sn in nodes if sn.live and sn.raft.role == LEADER]
