"""A deterministic simulation of a Raft cluster under faults.

Theory of operation
-------------------
Time is a step counter; one step is about one tick of every running node: each
node's clock runs at its own rate, drawn within the core's max_clock_drift, so a
node ticks a little more or less often than the step count. In each step:

1. the nemesis may crash a node, restart one, or start or heal a partition;
2. every message due at this step is delivered (unless its link is cut);
3. every running node ticks as often as its clock says;
4. a client may propose a command to the leader;
5. every property below is checked.

After every input the node's Ready is carried out by the same Ready driver the
node runs (raftproc.server.driver), through in-memory twins (raftproc.sim.host,
raftproc.sim.storage): persist, then send, then apply, then advance. Most runs also
snapshot: a node whose applied index runs a drawn number of entries past its last
snapshot saves one and compacts its log, so leaders must send InstallSnapshot to
followers that fall behind. An InstallSnapshot carries the leader's stored snapshot
as a whole (the chunked stream is the host's business, tested apart); if the
network loses it the leader hears that the transfer failed, as a host would. Sending puts a
message on the network with a random delay of at least one step (so messages
reorder), and the network may drop or duplicate it. A crash throws away the
RaftNode object: only its storage survives, and the restart rebuilds the node from
it. One seed drives every choice (faults, delays, the nodes' election timers), so
`python -m raftproc.sim --seed N` replays a run exactly.

Properties checked after every step (Raft paper, Figure 3, plus durability):
- Election Safety: at most one leader per term.
- Log Matching: an (index, term) pair names one entry, with one predecessor term,
  across every log ever persisted. By induction on the index, two logs holding the
  same (index, term) hold the same prefix.
- Leader Completeness: a leader holds every entry committed in its term or before.
- State Machine Safety: no two nodes ever apply different entries at one index.
- Durability: the newest committed entry is in the storage of a majority, so no
  crash pattern can lose it (in runs whose membership never changed).
- Leader Completeness ahead of time: no node whose stored log lacks the newest
  committed entry could collect the votes it needs: a quorum of the configuration
  its own stored log holds (joint or not), among voters whose stored logs would
  find it up to date (§5.4.1). This holds in every correct Raft state and fails at
  the moment a bug commits something a future leader could overwrite (Figure 8, or
  two configuration changes in flight), rather than only in the rare runs where
  that future leader then appears.
- Persist before promise: a vote, an append acknowledgement, or any message of a
  term leaves a node only after its storage holds what the message promises.
- Reads are linearizable: a read that any node taking itself for leader accepted
  (ReadIndex, or a lease in half of them) and later confirmed must be served at an
  index covering every entry committed anywhere before the read was asked.
- Committed entries stay: once a node's storage holds a committed entry (in its log
  or its snapshot) it holds it forever. A truncation or a snapshot install that
  drops one is a bug even when enough other copies survive to hide it.
- Per-node invariants (raftproc.core.invariants) before and after each step.

Half the runs change membership (raftproc.core.membership): the leader is asked to
add a spare or removed node as a learner, promote a learner, remove a voter (the
leader included), replace a voter by a learner in one joint change, or drop a
learner. A node whose removal the leader's committed configuration records is shut
down for good, as an operator would, until it is added again with its storage.

After the run, faults heal (partitions, loss, crashed nodes restart) and liveness is
checked: a leader is elected and a fresh proposal is applied on every member within
a bounded number of steps.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raftproc.core.invariants import (
    InvariantViolation,
    NodeView,
    check_log,
    check_transition,
)
from raftproc.core.log import LogInvariantError
from raftproc.core.membership import Membership
from raftproc.core.messages import (
    Entry,
    InstallSnapshot,
    Message,
    NodeId,
    SnapshotMeta,
    describe,
)
from raftproc.core.node import RaftNode
from raftproc.core.quorum import majority
from raftproc.core.types import LEADER, CommittedConflict, RaftOptions, TransferInProgress
from raftproc.server.driver import Driver
from raftproc.sim.faults import FaultConfig, Nemesis
from raftproc.sim.host import NodeCrashed, SimHost
from raftproc.sim.properties import LivenessViolation, PropertyChecks, SafetyViolation
from raftproc.sim.storage import MemoryStorage

TraceFn = Callable[[str], None]
NodeFactory = Callable[..., RaftNode]
DriverFactory = Callable[..., Driver]

__all__ = ["FaultConfig", "LivenessViolation", "SafetyViolation", "SimConfig", "SimStats", "Simulation", "replay_command"]


def random_raft_config(rng: random.Random) -> RaftOptions:
    """Short timeouts (elections happen often in 2,000 steps) and, drawn per run,
    message and pipeline limits: small ones cut AppendEntries inside runs of
    entries, where bugs in conflict handling and commitment show."""
    return RaftOptions(
        election_timeout_min=10,
        election_timeout_max=20,
        heartbeat_interval=rng.choice((2, 3)),
        max_entries_per_message=rng.choice((1, 2, 3, 8, 32)),
        max_inflight_entries=rng.choice((4, 16, 64, 256)),
        max_bytes_per_message=rng.choice((1, 12, 1 << 20)),
        pre_vote=rng.random() < 0.5,
        check_quorum=rng.random() < 0.5,
        promote_lag_entries=rng.choice((0, 4, 32)),
    )


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 5
    steps: int = 2000
    raft: RaftOptions | None = None  # None: random_raft_config(seed)
    faults: FaultConfig = field(default_factory=FaultConfig)
    liveness_steps: int = 600
    convergence_steps: int = 4000


@dataclass(slots=True)
class SimStats:
    seed: int
    nodes: int
    steps: int = 0
    leaders_elected: int = 0
    max_term: int = 0
    committed: int = 0
    proposals: int = 0
    crashes: int = 0
    partitions: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    reads_served: int = 0
    config_changes: int = 0


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
        self.deferred: list[Callable[[RaftNode], None]] = []

    @property
    def live(self) -> bool:
        """Running and not frozen: a node whose Ready stalled on a full disk is
        neither ticked nor stepped nor asked anything until the write goes through
        (what the node's host does, raftproc.server.host)."""
        return self.node is not None and self.driver is not None and self.driver.stalled is None


def replay_command(seed: int, cfg: SimConfig) -> str:
    return f"python -m raftproc.sim --seed {seed} --nodes {cfg.nodes} --steps {cfg.steps}"


class Simulation(Nemesis, PropertyChecks):
    def __init__(
        self,
        seed: int,
        cfg: SimConfig | None = None,
        *,
        trace: TraceFn | None = None,
        node_factory: NodeFactory = RaftNode,
        driver_factory: DriverFactory = Driver,
    ) -> None:
        """`node_factory` and `driver_factory` let tests plant bugs in the core and in
        the Ready driver (tests/sim/test_planted_bugs.py)."""
        self.seed = seed
        self.cfg = cfg or SimConfig()
        self.faults = self.cfg.faults
        self.rng = random.Random(seed)
        self.raft_config = self.cfg.raft or random_raft_config(self.rng)
        # Half the runs model a host that syncs in the background (advance(persisted=
        # False), then persisted() one or more steps later), half one that syncs inline.
        self.background_sync = self.rng.random() < 0.5
        self.trace = trace
        self.node_factory = node_factory
        self.driver_factory = driver_factory
        self.ids: tuple[NodeId, ...] = tuple(range(1, self.cfg.nodes + 1))
        self.bootstrap = Membership(self.ids)
        self.quorum = majority(self.cfg.nodes)
        self.nodes: dict[NodeId, SimNode] = {}
        for i in self.ids:
            self._add_node(i)
        self.now = 0
        self._seq = 0
        self._in_flight: list[tuple[int, int, Message]] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.partition_until = 0
        self.loss = self.faults.loss
        self.duplicate = self.faults.duplicate
        self._crash_mid_ready = self.faults.crash_mid_ready
        # What the cluster as a whole has committed: committed[i - 1] is entry i.
        self.committed: list[Entry] = []
        # commit_terms[i - 1]: the term of the first node seen applying entry i. A node
        # learns of a commit only in the committing leader's term or later, so this is
        # never below the term in which entry i was committed.
        self.commit_terms: list[int] = []
        # Log Matching: (index, term) -> (command, term of the entry before it).
        self.entry_identity: dict[tuple[int, int], tuple[bytes | None, int]] = {}
        self.leader_of_term: dict[int, NodeId] = {}
        self.stats = SimStats(seed=seed, nodes=self.cfg.nodes)
        self._next_command = 0
        # Entries a node applies past its last snapshot before it takes the next one.
        self.snapshot_every = self.rng.choice((2, 5, 13, 40)) if self.rng.random() < self.faults.snapshots else 0
        # Snapshot data travelling with an InstallSnapshot, by message sequence number.
        self._snapshot_payload: dict[int, tuple[Entry, ...]] = {}
        # Reads asked and not yet served: request -> entries committed when it was asked.
        self._reads: dict[int, int] = {}
        self._next_read = 0
        self.changes_membership = self.rng.random() < self.faults.membership
        if self.changes_membership:
            for i in range(self.cfg.nodes + 1, self.cfg.nodes + 1 + self.faults.spares):
                self._add_node(i).retired = True
        for sn in self.nodes.values():
            if not sn.retired:
                self._start(sn)

    # --- running ------------------------------------------------------------------

    def run(self) -> SimStats:
        try:
            for _ in range(self.cfg.steps):
                self.step(faults=True)
            self.heal_all()
            self._await_liveness()
            for sn in self.nodes.values():
                if sn.node is not None:
                    check_log(sn.node)
        except LivenessViolation:
            raise
        except (InvariantViolation, LogInvariantError, CommittedConflict, SafetyViolation) as e:
            raise self._violation(SafetyViolation, str(e)) from e
        except Exception as e:  # a crash of the core is a bug to replay like any other
            raise self._violation(SafetyViolation, f"{type(e).__name__}: {e}") from e
        self.stats.committed = len(self.committed)
        self.stats.max_term = max(self.leader_of_term, default=0)
        return self.stats

    def step(self, *, faults: bool, clients: bool = True) -> None:
        self.now += 1
        self.stats.steps = self.now
        if faults:
            self._nemesis()
        self._restart_due()
        self._retry_stalled()
        for sn in self.nodes.values():
            if sn.storage.unsynced and sn.node is not None and self.rng.random() < 0.7:
                self._sync_pending(sn)
        self._deliver_due()
        for sn in self.nodes.values():
            if sn.live:
                self._tick(sn)
        if clients and self.rng.random() < self.faults.propose:
            self._client_propose()
        if clients and self.rng.random() < self.faults.read:
            self._client_read()
        self._retire_removed()
        self._check()

    def heal_all(self) -> None:
        self._note("heal: partitions removed, no more loss or duplication, every node restarts")
        self.blocked.clear()
        self.partition_until = 0
        self.loss = 0.0
        self.duplicate = 0.0
        self._crash_mid_ready = 0.0
        for sn in self.nodes.values():
            sn.full_until = 0
            sn.storage.full = False
            if sn.node is None and not sn.retired:
                sn.down_until = self.now

    def _await_liveness(self) -> None:
        """After healing, a leader must emerge and commit a new command within
        `liveness_steps`; then every node must apply it within `convergence_steps`
        (catching up a long log at small message sizes takes a while)."""
        deadline = self.now + self.cfg.liveness_steps
        probe: tuple[int, int] | None = None
        while probe is None or not self._is_committed(probe):
            if self.now >= deadline:
                raise self._violation(LivenessViolation, f"no new command committed within {self.cfg.liveness_steps} steps of healing")
            self.step(faults=False, clients=False)
            leader = self.leader()
            if leader is not None and leader.transferee is None and (probe is None or leader.log.term_at(probe[0]) != probe[1]):
                probe = leader.propose(self._new_command(b"probe"))
                self._handle_ready(self.nodes[leader.id])
        deadline = self.now + self.cfg.convergence_steps
        while not all(sn.applied_index >= probe[0] for sn in self.nodes.values() if not sn.retired):
            if self.now >= deadline:
                raise self._violation(
                    LivenessViolation, f"command {probe} not applied on every node within {self.cfg.convergence_steps} steps"
                )
            self.step(faults=False, clients=False)

    def _is_committed(self, entry: tuple[int, int]) -> bool:
        index, term = entry
        return len(self.committed) >= index and self.committed[index - 1].term == term

    def leader(self) -> RaftNode | None:
        """The leader of the newest term, if it is running and leads."""
        best: RaftNode | None = None
        for sn in self.nodes.values():
            n = sn.node
            if n is not None and n.role == LEADER and (best is None or n.current_term > best.current_term):
                best = n
        if best is None:
            return None
        newest = max(sn.node.current_term for sn in self.nodes.values() if sn.node is not None)
        return best if best.current_term == newest else None

    # --- nodes --------------------------------------------------------------------

    def _add_node(self, node_id: NodeId) -> SimNode:
        sn = self.nodes[node_id] = SimNode(node_id)
        # Each node's clock runs at its own rate within the bound the core's read
        # leases allow for (a Random of its own, so the rest of a seed's run is as before).
        drift = self.raft_config.max_clock_drift
        sn.rate = 1 + random.Random(self.seed * 1_000_003 + node_id).uniform(-drift, drift)
        sn.storage.on_store = lambda rd: self._check_stored(node_id, sn.storage, rd.entries)
        return sn

    def _start(self, sn: SimNode) -> None:
        st = sn.storage
        sn.node = self.node_factory(
            sn.id,
            self.bootstrap,
            rng=random.Random(self.rng.getrandbits(64)),
            options=self.raft_config,
            hard_state=st.hard_state,
            entries=list(st.entries),
            snapshot=st.snapshot,
            applied=st.snapshot_index,
            log=self._node_event if self.trace else _no_event,
        )
        host = SimHost(self, sn)
        sn.driver = self.driver_factory(
            sn.node,
            storage=st,
            transport=host,
            state_machine=host,
            installer=host,
            syncer=st if self.background_sync else None,
            on_ready=host.on_ready,
        )
        sn.received = {}
        sn.applied_index = st.snapshot_index
        sn.last_tick = self.now
        view = NodeView.of(sn.node)
        if sn.view is not None:
            check_transition(sn.view, view, restarted=True)
        sn.view = view

    def _crash(self, sn: SimNode, *, retire: bool = False) -> None:
        assert sn.node is not None
        self._note(f"{'retire' if retire else 'crash'} node {sn.id} ({sn.node.role}, term {sn.node.current_term})")
        sn.retired = retire
        sn.node = sn.driver = None
        sn.deferred = []
        sn.storage.lose_unsynced()  # written, never synced: gone with the process
        # What survives is what was persisted; a term or vote still in memory (its
        # messages held back) was never promised, so the restart is judged from disk.
        hs = sn.storage.hard_state
        sn.view = NodeView(sn.id, hs.current_term, hs.voted_for, None, hs.commit_index)
        sn.down_until = self.now + self.rng.randint(self.faults.down_min, self.faults.down_max)
        self.stats.crashes += 1

    def _restart_due(self) -> None:
        for sn in self.nodes.values():
            if sn.node is None and not sn.retired and sn.down_until <= self.now:
                self._note(f"restart node {sn.id} from storage: term {sn.storage.hard_state.current_term}, {sn.storage.last_index} entries")
                self._start(sn)

    def _retry_stalled(self) -> None:
        """Disks that were full get room back; a stalled Ready is written again."""
        for sn in self.nodes.values():
            if sn.storage.full and sn.full_until <= self.now:
                sn.storage.full = False
                self._note(f"node {sn.id}: disk has room again")
            if sn.driver is None or sn.driver.stalled is None or sn.storage.full:
                continue
            try:
                done = sn.driver.retry()
            except NodeCrashed:
                self._crash(sn)
                continue
            if done:
                self._note(f"node {sn.id}: stalled write went through")
                self._handle_ready(sn)
                if sn.live:
                    self._tick(sn)  # at once, as the host does: its lease hears the frozen time
                deferred, sn.deferred = sn.deferred, []
                for report in deferred:
                    if sn.live:
                        report(sn.node)
                        self._handle_ready(sn)

    def _tick(self, sn: SimNode) -> None:
        """One tick for the time since the node's last: a node that was frozen
        hears all of it at once (raftproc.server.host._catch_up_clock)."""
        elapsed = int(self.now * sn.rate) - int(sn.last_tick * sn.rate)
        if elapsed < 1:
            return
        sn.last_tick = self.now
        sn.node.tick(elapsed)
        self._handle_ready(sn)

    def _handle_ready(self, sn: SimNode) -> None:
        """The node's Ready, carried out by the driver the node runs; a process that
        dies in the middle (NodeCrashed) loses what it had not synced."""
        assert sn.driver is not None
        try:
            sn.driver.handle_ready()
        except NodeCrashed:
            self._crash(sn)
            return
        if sn.driver.stalled is not None:
            self._note(f"node {sn.id}: disk full, Ready stalled ({sn.driver.disk_full_error})")
            return
        self._maybe_snapshot(sn)

    def _maybe_snapshot(self, sn: SimNode) -> None:
        node = sn.node
        st = sn.storage
        if not self.snapshot_every or node is None or sn.applied_index - st.snapshot_index < self.snapshot_every:
            return
        index = sn.applied_index
        if index > node.log.stable_index:
            return  # a background write is still on its way: snapshot later (RaftNode.compact)
        term = node.log.term_at(index)
        assert term is not None
        st.save_snapshot(
            SnapshotMeta(index, term, node.log.membership_at(index), hash=node.log.hash_at(index)), tuple(self.committed[:index])
        )
        node.compact(index)
        self.stats.snapshots_taken += 1

    def _sync_pending(self, sn: SimNode) -> None:
        """A background sync completes: the unsynced writes become durable one at a
        time, as a sync thread reports its progress, and after each the driver lets
        out what waited for it."""
        assert sn.driver is not None
        while sn.storage.unsynced:
            sn.driver.on_synced(sn.storage.sync_next())
        self._handle_ready(sn)

    # --- network ------------------------------------------------------------------

    def _send(self, sn: SimNode, msg: Message) -> None:
        self.stats.messages_sent += 1
        if isinstance(msg, InstallSnapshot):
            self._send_snapshot(sn, msg)
            return
        if self.rng.random() < self.loss:
            self.stats.messages_dropped += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self._seq += 1
            at = self.now + self.rng.randint(self.faults.min_delay, self.faults.max_delay)
            heapq.heappush(self._in_flight, (at, self._seq, msg))

    def _send_snapshot(self, sn: SimNode, msg: InstallSnapshot) -> None:
        """The host streams its newest stored snapshot, which covers at least what the
        core asked for; it arrives whole or the sender hears that it failed."""
        st = sn.storage
        assert st.snapshot is not None and st.snapshot.index >= msg.snapshot.index
        self._seq += 1
        self._snapshot_payload[self._seq] = st.snapshot_data
        at = self.now + self.rng.randint(self.faults.min_delay, self.faults.max_delay * 3)
        heapq.heappush(self._in_flight, (at, self._seq, InstallSnapshot(src=msg.src, dst=msg.dst, term=msg.term, snapshot=st.snapshot)))

    def _deliver_snapshot(self, seq: int, msg: InstallSnapshot) -> None:
        data = self._snapshot_payload.pop(seq)
        sn = self.nodes[msg.dst]
        if not sn.live or (msg.src, msg.dst) in self.blocked or self.rng.random() < self.loss:
            self.stats.messages_dropped += 1
            self._report(self.nodes[msg.src], lambda node: node.report_snapshot(msg.dst, success=False))
            return
        if self.trace:
            self.trace(f"t={self.now} {describe(msg)}")
        sn.received[(msg.snapshot.index, msg.snapshot.term)] = data
        sn.node.step(msg)
        self._handle_ready(sn)
        self._report(self.nodes[msg.src], lambda node: node.report_snapshot(msg.dst, success=True))

    def _report(self, sender: SimNode, report: Callable[[RaftNode], None]) -> None:
        """What the sender's transport learned: told now if it is live, once it is
        live again if it is frozen, never if it died (a restart knows nothing of it)."""
        if sender.live:
            report(sender.node)
            self._handle_ready(sender)
        elif sender.node is not None:
            sender.deferred.append(report)

    def _deliver_due(self) -> None:
        q = self._in_flight
        while q and q[0][0] <= self.now:
            _, seq, msg = heapq.heappop(q)
            if isinstance(msg, InstallSnapshot):
                self._deliver_snapshot(seq, msg)
                continue
            sn = self.nodes[msg.dst]
            if sn.node is not None and not sn.live:
                self.stats.messages_dropped += 1  # a frozen node drops what arrives; the link stays up
                continue
            if sn.node is None or (msg.src, msg.dst) in self.blocked:
                self.stats.messages_dropped += 1
                # A dead process or a cut link breaks the sender's connection, which
                # its transport reports; a plain lost packet does not.
                self._report(self.nodes[msg.src], lambda node, dst=msg.dst: node.report_unreachable(dst))
                continue
            if self.trace:
                self.trace(f"t={self.now} {describe(msg)}")
            sn.node.step(msg)
            self._handle_ready(sn)

    # --- clients ------------------------------------------------------------------

    def _client_propose(self) -> None:
        running = [sn for sn in self.nodes.values() if sn.live]
        if not running:
            return
        node = self.rng.choice(running).node
        assert node is not None
        if node.role != LEADER and node.leader_id is not None:
            target = self.nodes[node.leader_id]
            if target.live:
                node = target.node  # a redirect, as a real client would follow
        if node.role != LEADER:
            return
        try:
            node.propose(self._new_command(b"c"))
        except TransferInProgress:
            return  # the client is told to retry, as the host does
        self.stats.proposals += 1
        self._handle_ready(self.nodes[node.id])

    def _client_read(self) -> None:
        """A read sent to any node that takes itself for leader, stale or not."""
        leaders = [sn for sn in self.nodes.values() if sn.live and sn.node.role == LEADER]
        if not leaders:
            return
        sn = self.rng.choice(leaders)
        self._next_read += 1
        self._reads[self._next_read] = len(self.committed)
        sn.node.read_index(self._next_read, lease=self.rng.random() < 0.5)
        self._handle_ready(sn)

    def _new_command(self, prefix: bytes) -> bytes:
        self._next_command += 1
        return prefix + str(self._next_command).encode()

    # --- reporting ------------------------------------------------------------------

    def _violation(self, kind: type[AssertionError], what: str) -> AssertionError:
        return kind(f"{what}\n  seed {self.seed}, step {self.now}; replay: {replay_command(self.seed, self.cfg)}")

    def _note(self, text: str) -> None:
        if self.trace:
            self.trace(f"t={self.now} ** {text}")

    def _node_event(self, event: str, **fields: object) -> None:
        assert self.trace is not None
        node = fields.pop("node")
        term = fields.pop("term")
        role = fields.pop("role")
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        self.trace(f"t={self.now}    node {node} [{role} t{term}] {event} {extra}".rstrip())


def _no_event(event: str, **fields: object) -> None:
    return None
