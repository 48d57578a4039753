"""Faults the simulator injects: crashes, partitions, leadership transfers and
membership changes, drawn from the run's seed (the nemesis), and their chances.

`Nemesis` is a part of raftproc.sim.cluster.Simulation, kept here so the cluster
module reads as the run's loop and this one as its faults.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftproc.core.messages import NodeId
from raftproc.core.types import LEADER, MembershipChangeRefused, TransferInProgress


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


class Nemesis:
    """The fault-injecting half of Simulation (which supplies rng, nodes, blocked,
    stats, _crash, _handle_ready, leader and _note)."""

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
        if rng.random() < f.disk_full:
            self._fill_disk()
        if self.changes_membership and rng.random() < f.member_change:
            self._change_membership()

    def _fill_disk(self) -> None:
        running = [sn for sn in self.nodes.values() if sn.node is not None and not sn.storage.full]
        if not running:
            return
        sn = self.rng.choice(running)
        sn.storage.full = True
        sn.full_until = self.now + self.rng.randint(self.faults.partition_min, self.faults.partition_max)
        self._note(f"node {sn.id}: disk full until t={sn.full_until}")

    def _transfer(self) -> None:
        leaders = [sn for sn in self.nodes.values() if sn.live and sn.node.role == LEADER]
        if not leaders:
            return
        sn = self.rng.choice(leaders)
        if self.rng.random() < 0.25:
            # What the host does when its disk syncs slower than an election timeout.
            self._note(f"node {sn.id} asked to step down")
            sn.node.step_down("asked by the simulation")
            self._handle_ready(sn)
            return
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
        if leader is None or not self.nodes[leader.id].live:
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
            leader.propose_membership(voters, learners)
        except (MembershipChangeRefused, TransferInProgress) as e:
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
        leaders = [sn.node for sn in self.nodes.values() if sn.live and sn.node.role == LEADER]
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
