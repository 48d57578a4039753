"""Faults the simulator injects: crashes, partitions, full disks, leadership
transfers and membership changes, drawn from the run's seed, and their chances.

A `FaultInjector` decides, each step, what goes wrong; it cuts links on the
network itself and asks the cluster (`ClusterControl`: the simulation's run loop)
to crash a node or carry out a Ready. Every draw comes from the run's one Random,
in the order the run makes it, so a seed replays the same faults.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from raftproc.core.messages import NodeId
from raftproc.core.node import RaftNode
from raftproc.core.types import LEADER, MembershipChangeRefused, TransferInProgress
from raftproc.sim.network import SimNetwork
from raftproc.sim.node import SimNode, live_leaders
from raftproc.sim.stats import SimStats
from raftproc.sim.timeline import Timeline


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
    transfer: float = 0.004  # a leader is asked to hand over to a random peer (or, a quarter of the time, to step down)
    disk_full: float = 0.003  # a node's disk fills up for a while: its next write stalls
    snapshots: float = 0.75  # share of runs in which nodes snapshot and compact
    membership: float = 0.5  # share of runs that change membership
    member_change: float = 0.03  # in those runs: the leader is asked for a change
    spares: int = 2  # nodes outside the first configuration, ready to join


class ClusterControl(Protocol):
    """What the injector asks of the cluster it breaks (raftproc.sim.cluster.Simulation)."""

    def leader(self) -> RaftNode | None: ...

    def crash(self, sn: SimNode, *, retire: bool = False) -> None: ...

    def handle_ready(self, sn: SimNode) -> None: ...


class FaultInjector:
    def __init__(
        self,
        config: FaultConfig,
        *,
        rng: random.Random,
        nodes: Mapping[NodeId, SimNode],
        cluster: ClusterControl,
        network: SimNetwork,
        stats: SimStats,
        timeline: Timeline,
        changes_membership: bool,
    ) -> None:
        self._config = config
        self._rng = rng
        self._nodes = nodes
        self._cluster = cluster
        self._network = network
        self._stats = stats
        self._timeline = timeline
        self.changes_membership = changes_membership  # this run asks for membership changes
        self._partition_until = 0
        self._crash_mid_ready = config.crash_mid_ready

    def inject(self) -> None:
        """This step's faults: each kind with its chance."""
        f = self._config
        rng = self._rng
        if self._network.blocked and self._timeline.now >= self._partition_until:
            self._timeline.note("partition healed")
            self._network.blocked.clear()
        if rng.random() < f.crash:
            running = [sn for sn in self._nodes.values() if sn.node is not None]
            leaders = [sn for sn in running if sn.raft.role == LEADER]
            if leaders and rng.random() < f.crash_leader:
                self._cluster.crash(rng.choice(leaders))
            elif running:
                self._cluster.crash(rng.choice(running))
        if not self._network.blocked and rng.random() < f.partition:
            self._partition()
        if rng.random() < f.transfer:
            self._transfer()
        if rng.random() < f.disk_full:
            self._fill_disk()
        if self.changes_membership and rng.random() < f.member_change:
            self._change_membership()

    def dies_mid_ready(self) -> bool:
        """A process dies after a Ready's early sends, before its own write."""
        return self._crash_mid_ready > 0 and self._rng.random() < self._crash_mid_ready

    def heal_all(self) -> None:
        """The end of the faults: no partitions, loss, duplication or full disks, and
        every crashed member restarts at the next step."""
        self._timeline.note("heal: partitions removed, no more loss or duplication, every node restarts")
        self._network.heal()
        self._partition_until = 0
        self._crash_mid_ready = 0.0
        for sn in self._nodes.values():
            sn.full_until = 0
            sn.storage.full = False
            if sn.node is None and not sn.retired:
                sn.down_until = self._timeline.now

    def _fill_disk(self) -> None:
        running = [sn for sn in self._nodes.values() if sn.node is not None and not sn.storage.full]
        if not running:
            return
        sn = self._rng.choice(running)
        sn.storage.full = True
        sn.full_until = self._timeline.now + self._rng.randint(self._config.partition_min, self._config.partition_max)
        self._timeline.note(f"node {sn.id}: disk full until t={sn.full_until}")

    def _transfer(self) -> None:
        leaders = live_leaders(self._nodes.values())
        if not leaders:
            return
        sn = self._rng.choice(leaders)
        node = sn.raft
        if self._rng.random() < 0.25:
            # What the host does when its disk syncs slower than an election timeout.
            self._timeline.note(f"node {sn.id} asked to step down")
            node.step_down("asked by the simulation")
            self._cluster.handle_ready(sn)
            return
        voters = [v for v in node.membership.voters if v != sn.id]
        if not voters:
            return
        target = self._rng.choice(voters)
        self._timeline.note(f"node {sn.id} asked to transfer leadership to node {target}")
        node.transfer_leadership(target)
        self._cluster.handle_ready(sn)
        if not self._network.blocked and self._rng.random() < 0.3:
            # The old leader goes deaf right after handing over: it hears neither the
            # new leader nor its followers' answers, so nothing tells it that it was
            # replaced, while what it sends still arrives. Whatever it serves from
            # here on (a read lease, say) must not outlive its leadership.
            others = set(self._nodes) - {sn.id}
            self._network.blocked.update((o, sn.id) for o in others)
            self._partitioned(f"node {sn.id} hears nobody")

    def _change_membership(self, *, again: bool = True) -> None:
        """Ask the leader for one configuration change; it may refuse (one in flight,
        a learner still behind, no commit in its term yet), as it would a client."""
        leader = self._cluster.leader()
        if leader is None or not self._nodes[leader.id].live:
            return
        rng = self._rng
        m = leader.membership
        voters, learners = set(m.voters), set(m.learners)
        outsiders = sorted(sn.id for sn in self._nodes.values() if sn.retired)
        moves: list[str] = []
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
            leader.propose_membership(voters, learners)
        except (MembershipChangeRefused, TransferInProgress) as e:
            self._timeline.note(f"node {leader.id} refuses to {move}: {e}")
            return
        self._stats.config_changes += 1
        self._timeline.note(f"node {leader.id} asked to {move}: voters={sorted(voters)} learners={sorted(learners)}")
        self._cluster.handle_ready(self._nodes[leader.id])
        if joining is not None:
            sn = self._nodes[joining]
            sn.retired = False
            sn.down_until = self._timeline.now + 1  # started, from the storage it kept, next step
        if again and rng.random() < 0.5:
            # An impatient operator: the next change at once, which the leader must
            # refuse while this one is in flight.
            self._change_membership(again=False)

    def retire_removed(self) -> None:
        """Shut down nodes the leader's committed configuration no longer has. The
        leader of the highest term decides: a removed node may hold a higher term
        (it campaigns until shut down), so there may be no leader of the newest one."""
        if not self.changes_membership:
            return
        leader = max((sn.raft for sn in live_leaders(self._nodes.values())), key=lambda n: n.current_term, default=None)
        if leader is None or leader.membership.is_joint or leader.log.config_index > leader.commit_index:
            return
        members = leader.membership.members
        for sn in self._nodes.values():
            if sn.id not in members and not sn.retired:
                if sn.node is not None:
                    self._cluster.crash(sn, retire=True)
                else:
                    sn.retired = True

    def _partition(self) -> None:
        rng = self._rng
        kind = rng.choice(("isolate", "split", "asymmetric"))
        ids = list(self._nodes)
        if kind == "isolate":
            victim = rng.choice(ids)
            self._network.cut({victim}, set(ids) - {victim}, both_ways=True)
            what = f"isolate node {victim}"
        elif kind == "split":
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) // 2)
            minority, rest = set(ids[:cut]), set(ids[cut:])
            self._network.cut(minority, rest, both_ways=True)
            what = f"split {sorted(minority)} | {sorted(rest)}"
        else:
            links = [(a, b) for a in ids for b in ids if a != b]
            chosen = rng.sample(links, rng.randint(1, len(links) // 2))
            self._network.blocked.update(chosen)
            what = "one-way cuts " + " ".join(f"{a}-x>{b}" for a, b in sorted(chosen))
        self._partitioned(what)

    def _partitioned(self, what: str) -> None:
        """Links were cut just now: they heal after a drawn while."""
        self._partition_until = self._timeline.now + self._rng.randint(self._config.partition_min, self._config.partition_max)
        self._stats.partitions += 1
        self._timeline.note(f"partition: {what} until t={self._partition_until}")
