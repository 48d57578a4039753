"""A hand-driven cluster for scripted tests: the test decides which message goes
where and when, so a scenario from the paper can be replayed step by step.

Each node's Ready is carried out by the Ready driver the node runs
(raftproc.server.driver), with the simulator's MemoryStorage and a transport that
queues messages for the test to deliver.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from raftproc.core import LEADER, Entry, Message, RaftNode, RaftOptions
from raftproc.core.messages import SnapshotMeta
from raftproc.core.ready import ReadState
from raftproc.server.driver import Driver
from raftproc.sim.storage import MemoryStorage

Pick = Callable[[Message], bool]

# The paper's Raft, without PreVote and CheckQuorum, so scripts replay its scenarios.
SCRIPT_CONFIG = RaftOptions(election_timeout_min=10, election_timeout_max=20, heartbeat_interval=3, pre_vote=False, check_quorum=False)


def everything(msg: Message) -> bool:
    return True


class Cluster:
    def __init__(
        self,
        n: int,
        *,
        node_cls: type[RaftNode] = RaftNode,
        config: RaftOptions = SCRIPT_CONFIG,
        seed: int = 0,
        spares: int = 0,
    ) -> None:
        """Nodes 1..n bootstrap the cluster; `spares` more ids (n+1, ...) have storage
        but are not started: start(i) brings one up to join."""
        self.ids = tuple(range(1, n + 1))
        all_ids = range(1, n + spares + 1)
        self.node_cls = node_cls
        self.config = config
        self.rng = random.Random(seed)
        self.storage = {i: MemoryStorage() for i in all_ids}
        self.applied: dict[int, list[bytes | None]] = {i: [] for i in all_ids}
        self.reads: dict[int, list[ReadState]] = {i: [] for i in all_ids}  # ReadStates each node handed out
        self.nodes: dict[int, RaftNode | None] = {}
        self.drivers: dict[int, Driver] = {}
        self.queue: list[Message] = []
        for i in self.ids:
            self.start(i)

    def start(self, i: int) -> RaftNode:
        st = self.storage[i]
        node = self.node_cls(
            i,
            self.ids,
            rng=random.Random(self.rng.getrandbits(32)),
            options=self.config,
            hard_state=st.hard_state,
            entries=list(st.entries),
            snapshot=st.snapshot,
            applied=st.snapshot_index,
        )
        self.nodes[i] = node
        self.applied[i] = []
        host = _ScriptHost(self, i)
        self.drivers[i] = Driver(node, storage=st, transport=host, state_machine=host, installer=host)
        self.process(i)
        return node

    def crash(self, i: int) -> None:
        self.nodes[i] = None
        self.storage[i].lose_unsynced()
        self.queue = [m for m in self.queue if m.dst != i and m.src != i]

    def node(self, i: int) -> RaftNode:
        node = self.nodes[i]
        assert node is not None, f"node {i} is down"
        return node

    def process(self, i: int) -> None:
        self.node(i)
        self.drivers[i].handle_ready()

    def deliver(self, pick: Pick = everything, *, drop_rest: bool = False, rounds: int | None = None) -> None:
        """Deliver queued messages that `pick` selects, and whatever they cause that
        `pick` also selects, until none is left (or for `rounds` rounds). Others stay
        queued (or are dropped)."""
        for _ in range(rounds or 1000):
            chosen = [m for m in self.queue if pick(m)]
            rest = [m for m in self.queue if not pick(m)]
            self.queue = [] if drop_rest else rest
            if not chosen:
                return
            for m in chosen:
                if self.nodes.get(m.dst) is not None:
                    self.node(m.dst).step(m)
                    self.process(m.dst)
        if rounds is None:
            raise AssertionError("messages still flowing after the round limit")

    def drop(self, pick: Pick = everything) -> None:
        self.queue = [m for m in self.queue if not pick(m)]

    def elect(self, i: int, voters: tuple[int, ...] | None = None) -> RaftNode:
        """Make node i campaign; only `voters` (default: all) hear it. Returns it as leader."""
        node = self.node(i)
        allowed = set(voters if voters is not None else self.ids) | {i}
        for _ in range(3):  # a term the voters already voted in loses; the next one wins
            node.campaign()
            self.process(i)
            self.deliver(lambda m: m.src in allowed and m.dst in allowed and type(m).__name__.startswith("RequestVote"))
            if node.role == LEADER:
                return node
        raise AssertionError(node.describe())

    def propose(self, i: int, command: bytes) -> tuple[int, int]:
        result = self.node(i).propose(command)
        self.process(i)
        return result

    def tick(self, i: int, times: int = 1) -> None:
        for _ in range(times):
            self.node(i).tick()
            self.process(i)


class _ScriptHost:
    """One node's transport and state machine: messages queue for the test."""

    def __init__(self, cluster: Cluster, i: int) -> None:
        self.cluster = cluster
        self.i = i

    def send(self, messages: Sequence[Message]) -> None:
        self.cluster.queue.extend(messages)

    def flush(self) -> None:
        pass

    def apply(self, entries: Sequence[Entry]) -> None:
        self.cluster.applied[self.i].extend(e.command for e in entries)

    def serve_reads(self, read_states: Sequence[ReadState]) -> None:
        self.cluster.reads[self.i].extend(read_states)

    def install(self, meta: SnapshotMeta) -> None:
        raise AssertionError("scripted clusters exchange no snapshots")


def between(*ids: int) -> Pick:
    """Messages whose sender and receiver are both among `ids`."""
    allowed = set(ids)
    return lambda m: m.src in allowed and m.dst in allowed
