"""A deterministic simulation of a Raft cluster under faults.

Theory of operation
-------------------
Time is a step counter; one step is about one tick of every running node: each
node's clock runs at its own rate, drawn within the core's max_clock_drift, so a
node ticks a little more or less often than the step count. In each step:

1. the fault injector may crash a node, restart one, or start or heal a partition;
2. every message due at this step is delivered (unless its link is cut);
3. every running node ticks as often as its clock says;
4. a client may propose a command to the leader;
5. every property below is checked.

After every input the node's Ready is carried out by the same Ready driver the
node runs (raftproc.server.driver), through in-memory twins (raftproc.sim.host,
raftproc.sim.storage), in the order raftproc.core.ready states. Most runs also
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

The parts, each a collaborator the Simulation holds: raftproc.sim.network (messages
in flight), raftproc.sim.faults (what goes wrong), raftproc.sim.properties (the
checks and the record they keep), raftproc.sim.host (a node's in-memory twins for
the driver), raftproc.sim.node (a server's slot), raftproc.sim.timeline (the step
counter and the trace). The Simulation is the run loop that wires them and owns
the nodes' lives: start, crash, restart, Ready, snapshot, deliver, clients.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raftproc.core.invariants import InvariantViolation, NodeView, check_log, check_transition
from raftproc.core.log import LogInvariantError
from raftproc.core.membership import Membership
from raftproc.core.messages import Entry, InstallSnapshot, NodeId, SnapshotMeta
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, CommittedConflict, RaftOptions, TransferInProgress
from raftproc.server.driver import Driver
from raftproc.sim.faults import FaultConfig, FaultInjector
from raftproc.sim.host import NodeCrashed, SimHost
from raftproc.sim.network import SimNetwork
from raftproc.sim.node import Report, SimNode, live_leaders
from raftproc.sim.properties import LivenessViolation, PropertyChecker, SafetyViolation
from raftproc.sim.stats import SimStats
from raftproc.sim.timeline import Timeline, TraceFn

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


def replay_command(seed: int, cfg: SimConfig) -> str:
    return f"python -m raftproc.sim --seed {seed} --nodes {cfg.nodes} --steps {cfg.steps}"


class Simulation:
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
        the Ready driver (tests/sim/test_planted_bugs.py). Every draw of the run's
        Random happens here in a fixed order, so a seed replays the same run."""
        self.seed = seed
        self.cfg = cfg = cfg or SimConfig()
        self.rng = rng = random.Random(seed)
        self.raft_config = cfg.raft or random_raft_config(rng)
        # Half the runs model a host that syncs in the background (advance(persisted=
        # False), then persisted() one or more steps later), half one that syncs inline.
        self.background_sync = rng.random() < 0.5
        self.node_factory = node_factory
        self.driver_factory = driver_factory
        self.timeline = Timeline(trace)
        self.stats = SimStats(seed=seed, nodes=cfg.nodes)
        self.nodes: dict[NodeId, SimNode] = {}
        self.bootstrap = Membership(tuple(range(1, cfg.nodes + 1)))
        self.checks = PropertyChecker(self.nodes, self.bootstrap, self.stats, self.timeline)
        f = cfg.faults
        self.network = SimNetwork(rng, self.timeline, self.stats, delays=(f.min_delay, f.max_delay), loss=f.loss, duplicate=f.duplicate)
        for i in self.bootstrap.voters:
            self._add_node(i)
        # Entries a node applies past its last snapshot before it takes the next one.
        self.snapshot_every = rng.choice((2, 5, 13, 40)) if rng.random() < f.snapshots else 0
        changes_membership = rng.random() < f.membership
        self.injector = FaultInjector(
            f,
            rng=rng,
            nodes=self.nodes,
            cluster=self,
            network=self.network,
            stats=self.stats,
            timeline=self.timeline,
            changes_membership=changes_membership,
        )
        if self.injector.changes_membership:
            for i in range(cfg.nodes + 1, cfg.nodes + 1 + f.spares):
                self._add_node(i).retired = True
        self._next_command = 0
        self._next_read = 0
        for sn in self.nodes.values():
            if not sn.retired:
                self._start(sn)

    # --- running ------------------------------------------------------------------

    def run(self) -> SimStats:
        try:
            for _ in range(self.cfg.steps):
                self.step(faults=True)
            self.injector.heal_all()
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
        self.stats.committed = len(self.checks.committed)
        self.stats.max_term = max(self.checks.leader_of_term, default=0)
        return self.stats

    def step(self, *, faults: bool, clients: bool = True) -> None:
        self.timeline.now += 1
        self.stats.steps = self.timeline.now
        if faults:
            self.injector.inject()
        self._restart_due()
        self._retry_stalled()
        for sn in self.nodes.values():
            if sn.storage.unsynced and sn.node is not None and self.rng.random() < 0.7:
                self._sync_pending(sn)
        self._deliver_due()
        for sn in self.nodes.values():
            if sn.live:
                self._tick(sn)
        if clients and self.rng.random() < self.cfg.faults.propose:
            self._client_propose()
        if clients and self.rng.random() < self.cfg.faults.read:
            self._client_read()
        self.injector.retire_removed()
        self.checks.check_step()

    def _await_liveness(self) -> None:
        """After healing, a leader must emerge and commit a new command within
        `liveness_steps`; then every node must apply it within `convergence_steps`
        (catching up a long log at small message sizes takes a while)."""
        deadline = self.timeline.now + self.cfg.liveness_steps
        probe: tuple[int, int] | None = None
        while probe is None or not self.checks.is_committed(probe):
            if self.timeline.now >= deadline:
                raise self._violation(LivenessViolation, f"no new command committed within {self.cfg.liveness_steps} steps of healing")
            self.step(faults=False, clients=False)
            leader = self.leader()
            if leader is not None and leader.transferee is None and (probe is None or leader.log.term_at(probe[0]) != probe[1]):
                probe = leader.propose(self._new_command(b"probe"))
                self.handle_ready(self.nodes[leader.id])
        deadline = self.timeline.now + self.cfg.convergence_steps
        while not all(sn.applied_index >= probe[0] for sn in self.nodes.values() if not sn.retired):
            if self.timeline.now >= deadline:
                raise self._violation(
                    LivenessViolation, f"command {probe} not applied on every node within {self.cfg.convergence_steps} steps"
                )
            self.step(faults=False, clients=False)

    def leader(self) -> RaftNode | None:
        """The leader of the newest term, if it is running and leads."""
        running = [sn.node for sn in self.nodes.values() if sn.node is not None]
        best: RaftNode | None = None
        for n in running:
            if n.role == LEADER and (best is None or n.current_term > best.current_term):
                best = n
        if best is None:
            return None
        newest = max(n.current_term for n in running)
        return best if best.current_term == newest else None

    # --- nodes --------------------------------------------------------------------

    def _add_node(self, node_id: NodeId) -> SimNode:
        sn = self.nodes[node_id] = SimNode(node_id)
        # Each node's clock runs at its own rate within the bound the core's read
        # leases allow for (a Random of its own, so the rest of a seed's run is as before).
        drift = self.raft_config.max_clock_drift
        sn.rate = 1 + random.Random(self.seed * 1_000_003 + node_id).uniform(-drift, drift)
        checks, storage = self.checks, sn.storage
        storage.on_store = lambda rd: checks.check_stored(node_id, storage, rd.entries)
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
            log=self.timeline.node_event,
        )
        host = SimHost(sn, wire=self.network, checks=self.checks, deaths=self.injector, stats=self.stats, timeline=self.timeline)
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
        sn.last_tick = self.timeline.now
        view = NodeView.of(sn.node)
        if sn.view is not None:
            check_transition(sn.view, view, restarted=True)
        sn.view = view

    def crash(self, sn: SimNode, *, retire: bool = False) -> None:
        """The process dies (or, `retire`, is shut down for good): only its storage
        survives, less what it had not synced."""
        node = sn.raft
        self.timeline.note(f"{'retire' if retire else 'crash'} node {sn.id} ({node.role}, term {node.current_term})")
        sn.retired = retire
        sn.node = sn.driver = None
        sn.deferred = []
        sn.storage.lose_unsynced()  # written, never synced: gone with the process
        # What survives is what was persisted; a term or vote still in memory (its
        # messages held back) was never promised, so the restart is judged from disk.
        hs = sn.storage.hard_state
        sn.view = NodeView(sn.id, hs.current_term, hs.voted_for, None, hs.commit_index)
        sn.down_until = self.timeline.now + self.rng.randint(self.cfg.faults.down_min, self.cfg.faults.down_max)
        self.stats.crashes += 1

    def _restart_due(self) -> None:
        for sn in self.nodes.values():
            if sn.node is None and not sn.retired and sn.down_until <= self.timeline.now:
                self.timeline.note(
                    f"restart node {sn.id} from storage: term {sn.storage.hard_state.current_term}, {sn.storage.last_index} entries"
                )
                self._start(sn)

    def _retry_stalled(self) -> None:
        """Disks that were full get room back; a stalled Ready is written again."""
        for sn in self.nodes.values():
            if sn.storage.full and sn.full_until <= self.timeline.now:
                sn.storage.full = False
                self.timeline.note(f"node {sn.id}: disk has room again")
            if sn.driver is None or sn.driver.stalled is None or sn.storage.full:
                continue
            try:
                done = sn.driver.retry()
            except NodeCrashed:
                self.crash(sn)
                continue
            if done:
                self.timeline.note(f"node {sn.id}: stalled write went through")
                self.handle_ready(sn)
                if sn.live:
                    self._tick(sn)  # at once, as the host does: its lease hears the frozen time
                deferred, sn.deferred = sn.deferred, []
                for report in deferred:
                    if sn.live:
                        report(sn.raft)
                        self.handle_ready(sn)

    def _tick(self, sn: SimNode) -> None:
        """One tick for the time since the node's last: a node that was frozen
        hears all of it at once (raftproc.server.host._catch_up_clock)."""
        elapsed = int(self.timeline.now * sn.rate) - int(sn.last_tick * sn.rate)
        if elapsed < 1:
            return
        sn.last_tick = self.timeline.now
        sn.raft.tick(elapsed)
        self.handle_ready(sn)

    def handle_ready(self, sn: SimNode) -> None:
        """The node's Ready, carried out by the driver the node runs; a process that
        dies in the middle (NodeCrashed) loses what it had not synced."""
        assert sn.driver is not None
        try:
            sn.driver.handle_ready()
        except NodeCrashed:
            self.crash(sn)
            return
        if sn.driver.stalled is not None:
            self.timeline.note(f"node {sn.id}: disk full, Ready stalled ({sn.driver.disk_full_error})")
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
        meta = SnapshotMeta(index, term, node.log.membership_at(index), hash=node.log.hash_at(index))
        st.save_snapshot(meta, tuple(self.checks.committed[:index]))
        node.compact(index)
        self.stats.snapshots_taken += 1

    def _sync_pending(self, sn: SimNode) -> None:
        """A background sync completes: the unsynced writes become durable one at a
        time, as a sync thread reports its progress, and after each the driver lets
        out what waited for it."""
        assert sn.driver is not None
        while sn.storage.unsynced:
            sn.driver.on_synced(sn.storage.sync_next())
        self.handle_ready(sn)

    # --- delivery -----------------------------------------------------------------

    def _deliver_due(self) -> None:
        for msg, data in self.network.due():
            if isinstance(msg, InstallSnapshot):
                assert data is not None
                self._deliver_snapshot(msg, data)
                continue
            sn = self.nodes[msg.dst]
            if sn.node is not None and not sn.live:
                self.stats.messages_dropped += 1  # a frozen node drops what arrives; the link stays up
                continue
            if sn.node is None or self.network.is_cut(msg.src, msg.dst):
                self.stats.messages_dropped += 1
                # A dead process or a cut link breaks the sender's connection, which
                # its transport reports; a plain lost packet does not.
                self._report(self.nodes[msg.src], _unreachable(msg.dst))
                continue
            self.timeline.delivered(msg)
            sn.node.step(msg)
            self.handle_ready(sn)

    def _deliver_snapshot(self, msg: InstallSnapshot, data: tuple[Entry, ...]) -> None:
        sn = self.nodes[msg.dst]
        if not sn.live or self.network.is_cut(msg.src, msg.dst) or self.network.loses():
            self.stats.messages_dropped += 1
            self._report(self.nodes[msg.src], lambda node: node.report_snapshot(msg.dst, success=False))
            return
        self.timeline.delivered(msg)
        sn.received[(msg.snapshot.index, msg.snapshot.term)] = data
        sn.raft.step(msg)
        self.handle_ready(sn)
        self._report(self.nodes[msg.src], lambda node: node.report_snapshot(msg.dst, success=True))

    def _report(self, sender: SimNode, report: Report) -> None:
        """What the sender's transport learned: told now if it is live, once it is
        live again if it is frozen, never if it died (a restart knows nothing of it)."""
        if sender.live:
            report(sender.raft)
            self.handle_ready(sender)
        elif sender.node is not None:
            sender.deferred.append(report)

    # --- clients ------------------------------------------------------------------

    def _client_propose(self) -> None:
        running = [sn for sn in self.nodes.values() if sn.live]
        if not running:
            return
        node = self.rng.choice(running).raft
        if node.role != LEADER and node.leader_id is not None:
            target = self.nodes[node.leader_id]
            if target.live:
                node = target.raft  # a redirect, as a real client would follow
        if node.role != LEADER:
            return
        try:
            node.propose(self._new_command(b"c"))
        except TransferInProgress:
            return  # the client is told to retry, as the host does
        self.stats.proposals += 1
        self.handle_ready(self.nodes[node.id])

    def _client_read(self) -> None:
        """A read sent to any node that takes itself for leader, stale or not."""
        leaders = live_leaders(self.nodes.values())
        if not leaders:
            return
        sn = self.rng.choice(leaders)
        self._next_read += 1
        self.checks.read_asked(self._next_read)
        sn.raft.read_index(self._next_read, lease=self.rng.random() < 0.5)
        self.handle_ready(sn)

    def _new_command(self, prefix: bytes) -> bytes:
        self._next_command += 1
        return prefix + str(self._next_command).encode()

    def _violation(self, kind: type[AssertionError], what: str) -> AssertionError:
        return kind(f"{what}\n  seed {self.seed}, step {self.timeline.now}; replay: {replay_command(self.seed, self.cfg)}")


def _unreachable(peer: NodeId) -> Report:
    """The report of a broken connection to `peer`."""
    return lambda node: node.report_unreachable(peer)
