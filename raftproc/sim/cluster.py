"""A deterministic simulation of a Raft cluster under faults.

Theory of operation
-------------------
Time is a step counter; one step is one tick of every running node. In each step:

1. the nemesis may crash a node, restart one, or start or heal a partition;
2. every message due at this step is delivered (unless its link is cut);
3. every running node ticks;
4. a client may propose a command to the leader;
5. every property below is checked.

After every input the node's Ready is handled exactly as a real host must: persist
to the node's MemoryStorage, then send, then apply, then advance. Most runs also
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

from raftproc.core.invariants import InvariantViolation, NodeView, check_log, check_node, check_transition
from raftproc.core.log import LogInvariantError
from raftproc.core.messages import (
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    describe,
)
from raftproc.core.membership import Membership
from raftproc.core.node import LEADER, Config, ConfigChangeRefused, RaftNode, TransferInProgress
from raftproc.core.quorum import majority
from raftproc.core.ready import Ready, split_messages
from raftproc.sim.storage import MemoryStorage

TraceFn = Callable[[str], None]
NodeFactory = Callable[..., RaftNode]


class SafetyViolation(AssertionError):
    pass


class LivenessViolation(AssertionError):
    pass


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Chances are per step."""

    loss: float = 0.03
    duplicate: float = 0.03
    min_delay: int = 1
    max_delay: int = 4
    crash: float = 0.012
    crash_leader: float = 0.5  # of crashes, the share aimed at a current leader
    crash_mid_ready: float = 0.002  # per Ready with early appends: die before persisting it
    down_min: int = 3
    down_max: int = 60
    partition: float = 0.006
    partition_min: int = 10
    partition_max: int = 150
    propose: float = 0.4
    read: float = 0.3
    transfer: float = 0.004  # a leader is asked to hand over to a random peer
    snapshots: float = 0.75  # share of runs in which nodes snapshot and compact
    membership: float = 0.5  # share of runs that change membership
    member_change: float = 0.03  # in those runs: the leader is asked for a change
    spares: int = 2  # nodes outside the first configuration, ready to join


def random_raft_config(rng: random.Random) -> Config:
    """Short timeouts (elections happen often in 2,000 steps) and, drawn per run,
    message and pipeline limits: small ones cut AppendEntries inside runs of
    entries, where bugs in conflict handling and commitment show."""
    return Config(
        election_timeout_min=10,
        election_timeout_max=20,
        heartbeat_interval=rng.choice((2, 3)),
        max_entries_per_message=rng.choice((1, 2, 3, 8, 32)),
        max_inflight_entries=rng.choice((4, 16, 64, 256)),
        pre_vote=rng.random() < 0.5,
        check_quorum=rng.random() < 0.5,
        promote_lag_entries=rng.choice((0, 4, 32)),
    )


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 5
    steps: int = 2000
    raft: Config | None = None  # None: random_raft_config(seed)
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
        "id", "node", "storage", "view", "applied_index", "down_until", "pending", "received", "durable_floor", "retired",
    )

    def __init__(self, node_id: NodeId) -> None:
        self.id = node_id
        # Background-sync hosts: Readys written but not yet durable, with the messages
        # that must wait for them. A crash loses them.
        self.pending: list[tuple[Ready, list[Message], list[int | None]]] = []
        self.node: RaftNode | None = None
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
    ) -> None:
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
        self.ids: tuple[NodeId, ...] = tuple(range(1, self.cfg.nodes + 1))
        self.bootstrap = Membership(self.ids)
        self.quorum = majority(self.cfg.nodes)
        self.nodes: dict[NodeId, SimNode] = {i: SimNode(i) for i in self.ids}
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
                self.nodes[i] = SimNode(i)
                self.nodes[i].retired = True
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
        except (InvariantViolation, LogInvariantError, SafetyViolation) as e:
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
        for sn in self.nodes.values():
            if sn.pending and sn.node is not None and self.rng.random() < 0.7:
                self._sync_pending(sn)
        self._deliver_due()
        for sn in self.nodes.values():
            if sn.node is not None:
                sn.node.tick()
                self._handle_ready(sn)
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
                raise self._violation(LivenessViolation, f"command {probe} not applied on every node within {self.cfg.convergence_steps} steps")
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

    def _start(self, sn: SimNode) -> None:
        st = sn.storage
        sn.node = self.node_factory(
            sn.id,
            self.bootstrap,
            rng=random.Random(self.rng.getrandbits(64)),
            config=self.raft_config,
            hard_state=st.hard_state,
            entries=list(st.entries),
            snapshot=st.snapshot,
            applied=st.snapshot_index,
            log=self._node_event if self.trace else _no_event,
        )
        sn.received = {}
        sn.applied_index = st.snapshot_index
        view = NodeView.of(sn.node)
        if sn.view is not None:
            check_transition(sn.view, view, restarted=True)
        sn.view = view

    def _crash(self, sn: SimNode, *, retire: bool = False) -> None:
        assert sn.node is not None
        self._note(f"{'retire' if retire else 'crash'} node {sn.id} ({sn.node.role}, term {sn.node.current_term})")
        sn.retired = retire
        sn.node = None
        sn.pending = []  # written, never synced: gone with the process
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

    def _handle_ready(self, sn: SimNode) -> None:
        """The host's side of the Ready contract (raftproc.core.ready)."""
        node = sn.node
        assert node is not None
        while node.has_ready():
            rd = node.ready()
            self._serve_reads(sn, rd)
            if rd.snapshot is not None:
                self._handle_snapshot_ready(sn, rd)
                continue
            early, after = split_messages(rd)
            self._send(sn, early)
            if early and self._crash_mid_ready > 0 and self.rng.random() < self._crash_mid_ready:
                # The one window the contract leaves open: a leader's appends are out,
                # its own write of them never happened.
                self._crash(sn)
                return
            promised = [self._promised_term(node, m) for m in after]
            if self.background_sync:
                sn.pending.append((rd, after, promised))
                self._apply(sn, rd.committed_entries)
                node.advance(rd, persisted=False)
                continue
            self._persist(sn, rd)
            self._send(sn, tuple(after), promised)
            self._apply(sn, rd.committed_entries)
            node.advance(rd)
        self._maybe_snapshot(sn)

    def _handle_snapshot_ready(self, sn: SimNode, rd: Ready) -> None:
        """Installing a snapshot is done inline, whatever the sync mode: writes still
        pending are made durable first (their messages may leave), then the snapshot
        replaces state machine and log."""
        node = sn.node
        assert node is not None and rd.snapshot is not None
        pending, sn.pending = sn.pending, []
        for prd, after, promised in pending:
            self._persist(sn, prd)
            self._send(sn, tuple(after), promised)
        early, after = split_messages(rd)
        promised = [self._promised_term(node, m) for m in after]
        self._send(sn, early)
        self._persist(sn, rd)
        self._send(sn, tuple(after), promised)
        self._apply(sn, rd.committed_entries)
        node.advance(rd)

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
        st.save_snapshot(SnapshotMeta(index, term, node.log.membership_at(index)), tuple(self.committed[:index]))
        node.compact(index)
        self.stats.snapshots_taken += 1

    def _sync_pending(self, sn: SimNode) -> None:
        """A background sync completes: everything written so far is durable, the
        messages that waited for it leave, and the node learns what is persisted."""
        pending, sn.pending = sn.pending, []
        for rd, after, promised in pending:
            self._persist(sn, rd)
            self._send(sn, tuple(after), promised)
            if rd.entries and sn.node is not None:
                sn.node.persisted(rd.entries[-1].index, rd.entries[-1].term)
        self._handle_ready(sn)

    def _persist(self, sn: SimNode, rd: Ready) -> None:
        data = None
        if rd.snapshot is not None:
            snap = rd.snapshot
            data = sn.received.pop((snap.index, snap.term))
            sn.received.clear()
            self._check_snapshot_data(sn.id, data)
            sn.applied_index = snap.index
            self.stats.snapshots_installed += 1
            self._note(f"node {sn.id} installs snapshot {snap.term}/{snap.index}")
        if rd.entries:
            first = rd.entries[0].index
            prev_term = sn.storage.term_at(first - 1)
            if prev_term is None:
                raise SafetyViolation(f"node {sn.id} persists entry {first} after a gap (storage ends at {sn.storage.last_index})")
            for e in rd.entries:
                self._check_log_matching(sn.id, e, prev_term)
                prev_term = e.term
        sn.storage.persist(rd, data)

    def _check_snapshot_data(self, node_id: NodeId, data: tuple[Entry, ...]) -> None:
        for e in data:
            if e.index > len(self.committed) or self.committed[e.index - 1] != e:
                raise SafetyViolation(f"State Machine Safety: node {node_id} installs a snapshot holding {e}, never committed there")

    def _apply(self, sn: SimNode, entries: tuple[Entry, ...]) -> None:
        for e in entries:
            if e.index != sn.applied_index + 1:
                raise SafetyViolation(f"node {sn.id} applies {e.index} after {sn.applied_index}")
            sn.applied_index = e.index
            if e.index <= len(self.committed):
                known = self.committed[e.index - 1]
                if known != e:
                    raise SafetyViolation(
                        f"State Machine Safety: node {sn.id} applies {e.term}/{e.index} {e.command!r} "
                        f"where {known.term}/{known.index} {known.command!r} was applied"
                    )
            else:
                self.committed.append(e)
                self.commit_terms.append(sn.node.current_term if sn.node else 0)

    # --- network ------------------------------------------------------------------

    def _send(self, sn: SimNode, messages: tuple[Message, ...], promised: list[int | None] | None = None) -> None:
        for i, msg in enumerate(messages):
            self._check_promise(sn, msg, promised[i] if promised else None)
            self.stats.messages_sent += 1
            if isinstance(msg, InstallSnapshot):
                self._send_snapshot(sn, msg)
                continue
            if self.rng.random() < self.loss:
                self.stats.messages_dropped += 1
                continue
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
        sender = self.nodes[msg.src].node
        if sn.node is None or (msg.src, msg.dst) in self.blocked or self.rng.random() < self.loss:
            self.stats.messages_dropped += 1
            if sender is not None:
                sender.report_snapshot(msg.dst, success=False)
                self._handle_ready(self.nodes[msg.src])
            return
        if self.trace:
            self.trace(f"t={self.now} {describe(msg)}")
        sn.received[(msg.snapshot.index, msg.snapshot.term)] = data
        sn.node.step(msg)
        self._handle_ready(sn)
        if sender is not None:
            sender.report_snapshot(msg.dst, success=True)
            self._handle_ready(self.nodes[msg.src])

    def _deliver_due(self) -> None:
        q = self._in_flight
        while q and q[0][0] <= self.now:
            _, seq, msg = heapq.heappop(q)
            if isinstance(msg, InstallSnapshot):
                self._deliver_snapshot(seq, msg)
                continue
            sn = self.nodes[msg.dst]
            if sn.node is None or (msg.src, msg.dst) in self.blocked:
                self.stats.messages_dropped += 1
                # A dead process or a cut link breaks the sender's connection, which
                # its transport reports; a plain lost packet does not.
                sender = self.nodes[msg.src].node
                if sender is not None:
                    sender.report_unreachable(msg.dst)
                continue
            if self.trace:
                self.trace(f"t={self.now} {describe(msg)}")
            sn.node.step(msg)
            self._handle_ready(sn)

    # --- faults -------------------------------------------------------------------

    def _nemesis(self) -> None:
        f = self.faults
        rng = self.rng
        if self.blocked and self.now >= self.partition_until:
            self._note("partition healed")
            self.blocked.clear()
        if rng.random() < f.crash:
            running = [sn for sn in self.nodes.values() if sn.node is not None]
            leaders = [sn for sn in running if sn.node.role == LEADER]
            if leaders and rng.random() < f.crash_leader:
                self._crash(rng.choice(leaders))
            elif running:
                self._crash(rng.choice(running))
        if not self.blocked and rng.random() < f.partition:
            self._partition()
        if rng.random() < f.transfer:
            self._transfer()
        if self.changes_membership and rng.random() < f.member_change:
            self._change_membership()

    def _transfer(self) -> None:
        leaders = [sn for sn in self.nodes.values() if sn.node is not None and sn.node.role == LEADER]
        if not leaders:
            return
        sn = self.rng.choice(leaders)
        voters = [v for v in sn.node.membership.voters if v != sn.id]
        if not voters:
            return
        target = self.rng.choice(voters)
        self._note(f"node {sn.id} asked to transfer leadership to node {target}")
        sn.node.transfer_leadership(target)
        self._handle_ready(sn)
        if not self.blocked and self.rng.random() < 0.3:
            # The old leader goes deaf right after handing over: it hears neither the
            # new leader nor its followers' answers, so nothing tells it that it was
            # replaced, while what it sends still arrives. Whatever it serves from
            # here on (a read lease, say) must not outlive its leadership.
            others = set(self.nodes) - {sn.id}
            self.blocked.update((o, sn.id) for o in others)
            self.partition_until = self.now + self.rng.randint(self.faults.partition_min, self.faults.partition_max)
            self.stats.partitions += 1
            self._note(f"partition: node {sn.id} hears nobody until t={self.partition_until}")

    def _change_membership(self, *, again: bool = True) -> None:
        """Ask the leader for one configuration change; it may refuse (one in flight,
        a learner still behind, no commit in its term yet), as it would a client."""
        leader = self.leader()
        if leader is None:
            return
        rng = self.rng
        m = leader.membership
        voters, learners = set(m.voters), set(m.learners)
        outsiders = sorted(sn.id for sn in self.nodes.values() if sn.retired)
        moves = []
        if outsiders:
            moves.append("add learner")
        if learners:
            moves += ["promote", "drop learner", "replace"]
        if len(voters) > 3:
            moves.append("remove voter")
        if not moves:
            return
        move = rng.choice(moves)
        joining = None
        if move == "add learner":
            joining = rng.choice(outsiders)
            learners.add(joining)
        elif move == "promote":
            node = rng.choice(sorted(learners))
            learners.discard(node)
            voters.add(node)
        elif move == "drop learner":
            learners.discard(rng.choice(sorted(learners)))
        elif move == "remove voter":
            voters.discard(rng.choice(sorted(voters)))
        else:  # one joint change: a learner in, a voter (maybe the leader) out
            node = rng.choice(sorted(learners))
            learners.discard(node)
            voters.discard(rng.choice(sorted(voters)))
            voters.add(node)
        try:
            leader.propose_config(voters, learners)
        except (ConfigChangeRefused, TransferInProgress) as e:
            self._note(f"node {leader.id} refuses to {move}: {e}")
            return
        self.stats.config_changes += 1
        self._note(f"node {leader.id} asked to {move}: voters={sorted(voters)} learners={sorted(learners)}")
        self._handle_ready(self.nodes[leader.id])
        if joining is not None:
            sn = self.nodes[joining]
            sn.retired = False
            sn.down_until = self.now + 1  # started, from the storage it kept, next step
        if again and rng.random() < 0.5:
            # An impatient operator: the next change at once, which the leader must
            # refuse while this one is in flight.
            self._change_membership(again=False)

    def _retire_removed(self) -> None:
        """Shut down nodes the leader's committed configuration no longer has. The
        leader of the highest term decides: a removed node may hold a higher term
        (it campaigns until shut down), so there may be no leader of the newest one."""
        if not self.changes_membership:
            return
        leaders = [sn.node for sn in self.nodes.values() if sn.node is not None and sn.node.role == LEADER]
        leader = max(leaders, key=lambda n: n.current_term, default=None)
        if leader is None or leader.membership.is_joint or leader.log.config_index > leader.commit_index:
            return
        members = leader.membership.members
        for sn in self.nodes.values():
            if sn.id not in members and not sn.retired:
                if sn.node is not None:
                    self._crash(sn, retire=True)
                else:
                    sn.retired = True

    def _partition(self) -> None:
        rng = self.rng
        kind = rng.choice(("isolate", "split", "asymmetric"))
        ids = list(self.nodes)
        if kind == "isolate":
            victim = rng.choice(ids)
            self._cut({victim}, set(ids) - {victim}, both_ways=True)
            what = f"isolate node {victim}"
        elif kind == "split":
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) // 2)
            minority, rest = set(ids[:cut]), set(ids[cut:])
            self._cut(minority, rest, both_ways=True)
            what = f"split {sorted(minority)} | {sorted(rest)}"
        else:
            links = [(a, b) for a in ids for b in ids if a != b]
            chosen = rng.sample(links, rng.randint(1, len(links) // 2))
            self.blocked.update(chosen)
            what = "one-way cuts " + " ".join(f"{a}-x>{b}" for a, b in sorted(chosen))
        self.partition_until = self.now + rng.randint(self.faults.partition_min, self.faults.partition_max)
        self.stats.partitions += 1
        self._note(f"partition: {what} until t={self.partition_until}")

    def _cut(self, side_a: set[NodeId], side_b: set[NodeId], *, both_ways: bool) -> None:
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                if both_ways:
                    self.blocked.add((b, a))

    # --- clients ------------------------------------------------------------------

    def _client_propose(self) -> None:
        running = [sn for sn in self.nodes.values() if sn.node is not None]
        if not running:
            return
        node = self.rng.choice(running).node
        assert node is not None
        if node.role != LEADER and node.leader_id is not None:
            target = self.nodes[node.leader_id].node
            if target is not None:
                node = target  # a redirect, as a real client would follow
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
        leaders = [sn for sn in self.nodes.values() if sn.node is not None and sn.node.role == LEADER]
        if not leaders:
            return
        sn = self.rng.choice(leaders)
        self._next_read += 1
        self._reads[self._next_read] = len(self.committed)
        sn.node.read_index(self._next_read, lease=self.rng.random() < 0.5)
        self._handle_ready(sn)

    def _serve_reads(self, sn: SimNode, rd: Ready) -> None:
        for rs in rd.read_states:
            committed_before = self._reads.pop(rs.request)
            if rs.index < committed_before:
                raise SafetyViolation(
                    f"stale read: node {sn.id} serves read {rs.request} at index {rs.index}, but {committed_before} "
                    "entries were committed before it was asked"
                )
            self.stats.reads_served += 1

    def _new_command(self, prefix: bytes) -> bytes:
        self._next_command += 1
        return prefix + str(self._next_command).encode()

    # --- properties -----------------------------------------------------------------

    def _check(self) -> None:
        newest_committed = self.committed[-1] if self.committed else None
        for sn in self.nodes.values():
            node = sn.node
            if node is None:
                continue
            check_node(node)
            view = NodeView.of(node)
            assert sn.view is not None
            check_transition(sn.view, view)
            sn.view = view
            if node.role == LEADER:
                self._check_leader(node)
        if newest_committed is not None:
            self._check_durable(newest_committed)
        for sn in self.nodes.values():
            self._check_committed_kept(sn)

    def _check_committed_kept(self, sn: SimNode) -> None:
        st, committed = sn.storage, self.committed
        floor = sn.durable_floor
        if floor and st.term_at(floor) != committed[floor - 1].term:
            raise SafetyViolation(
                f"node {sn.id} lost committed entry {committed[floor - 1].term}/{floor} from its storage "
                f"(now {st.term_at(floor)}; snapshot at {st.snapshot_index}, last index {st.last_index})"
            )
        while floor < len(committed) and st.term_at(floor + 1) == committed[floor].term:
            floor += 1
        sn.durable_floor = floor

    def _check_leader(self, node: RaftNode) -> None:
        term = node.current_term
        known = self.leader_of_term.get(term)
        if known is None:
            self.leader_of_term[term] = node.id
            self.stats.leaders_elected += 1
            self._note(f"node {node.id} leads term {term}")
        elif known != node.id:
            raise SafetyViolation(f"Election Safety: nodes {known} and {node.id} both lead term {term}")
        # Leader Completeness (§5.4): the newest entry committed in this term or
        # before is in the leader's log (by Log Matching, so is everything before it).
        for i in range(len(self.committed) - 1, -1, -1):
            if self.commit_terms[i] <= term:
                e = self.committed[i]
                # Compacted entries were applied here (State Machine Safety checks them).
                if e.index > node.log.snapshot_index and node.log.term_at(e.index) != e.term:
                    raise SafetyViolation(
                        f"Leader Completeness: leader {node.id} of term {term} lacks committed entry {e.term}/{e.index}"
                    )
                break

    def _check_durable(self, e: Entry) -> None:
        lacking = [sn for sn in self.nodes.values() if sn.storage.term_at(e.index) != e.term]
        holders = len(self.nodes) - len(lacking)
        if not self.stats.config_changes and holders < self.quorum:
            raise SafetyViolation(
                f"Durability: committed entry {e.term}/{e.index} is stored on {holders} nodes, fewer than a majority"
            )
        for sn in lacking:
            st = sn.storage
            last_term = st.term_at(st.last_index)
            if last_term is None or last_term < e.term:
                continue  # every holder's log is more up-to-date than this one
            config = st.membership(self.bootstrap)
            if not config.is_voter(sn.id):
                continue  # it would never campaign
            electors = [other.id for other in self.nodes.values() if _at_least_as_up_to_date(st, other.storage)]
            if config.has_quorum(electors):
                raise SafetyViolation(
                    f"Leader Completeness: node {sn.id}, whose log ends at {last_term}/{st.last_index}, lacks "
                    f"committed entry {e.term}/{e.index} yet could win the votes of {sorted(electors)} "
                    f"under its configuration {config.describe()}"
                )

    def _check_log_matching(self, node_id: NodeId, e: Entry, prev_term: int) -> None:
        key = (e.index, e.term)
        identity = (e.command, prev_term)
        known = self.entry_identity.setdefault(key, identity)
        if known != identity:
            raise SafetyViolation(
                f"Log Matching: node {node_id} stores {e.term}/{e.index} as {identity}, another node as {known}"
            )

    @staticmethod
    def _promised_term(node: RaftNode, msg: Message) -> int | None:
        """For an append acknowledgement: the term of the entry at match_index when the
        node decided to send it (by Log Matching, that names the whole prefix)."""
        if isinstance(msg, AppendEntriesResponse) and msg.success:
            return node.log.term_at(msg.match_index)
        return None

    def _check_promise(self, sn: SimNode, msg: Message, promised_term: int | None) -> None:
        """Persist before you promise (Figure 2): what a message commits its sender to
        must already be in the sender's storage."""
        hs = sn.storage.hard_state
        # Pre-vote traffic names a term nobody has taken yet (thesis §9.6); it
        # promises nothing, so only the pre-candidate's own next term is allowed.
        allowed = hs.current_term
        if isinstance(msg, RequestVote) and msg.pre_vote:
            allowed = hs.current_term + 1
        elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.vote_granted:
            allowed = msg.term
        if msg.term > allowed:
            raise SafetyViolation(f"node {sn.id} sends term {msg.term} with term {hs.current_term} persisted: {describe(msg)}")
        if isinstance(msg, RequestVoteResponse) and msg.vote_granted and not msg.pre_vote:
            if hs.current_term != msg.term or hs.voted_for != msg.dst:
                raise SafetyViolation(f"node {sn.id} grants a vote it has not persisted ({hs}): {describe(msg)}")
        elif isinstance(msg, AppendEntriesResponse) and msg.success:
            if sn.storage.term_at(msg.match_index) != promised_term:
                raise SafetyViolation(f"node {sn.id} acknowledges entries it has not persisted: {describe(msg)}")

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


def _at_least_as_up_to_date(candidate: MemoryStorage, voter: MemoryStorage) -> bool:
    """§5.4.1 between two stored logs: would `voter` find `candidate` up to date?"""
    c_term, v_term = candidate.term_at(candidate.last_index), voter.term_at(voter.last_index)
    if c_term != v_term:
        return c_term > v_term
    return candidate.last_index >= voter.last_index


def _no_event(event: str, **fields: object) -> None:
    return None
