"""Faults on demand against unmodified node processes.

A schedule is drawn from the seed before the run (so one seed, one schedule):
when each fault starts, which kind, which victims (by role: the leader, a follower,
a minority, a majority, everyone) and how long it holds. Victims are resolved
against the cluster when the fault starts. Every start and heal is recorded with
its time, for the report.

Kinds:
- kill:      SIGKILL, then restart.
- power:     SIGKILL with the WAL in power-loss mode (the cluster runs with
             RAFTPROC_WAL_POWER_LOSS=1): unsynced writes vanish, as in a power cut.
             Sometimes the whole cluster loses power at once.
- pause:     SIGSTOP, then SIGCONT.
- stop:      SIGTERM (graceful), then start.
- partition: (network namespaces) isolate a node, split majority/minority with the
             leader on either side, or cut links one way only.
- slow:      (network namespaces) netem delay, jitter and loss on some nodes.
- transfer:  the leader hands leadership to a random node (TimeoutNow), while
             clients keep writing and reading.
- member:    membership changes while clients write: remove a node (the leader
             or a follower) and add it back with its data at the heal; or
             replace one: a new, empty node joins (learner, catch-up, vote), then
             the old one is removed and stays stopped. A change that does not
             finish is run again at the heal, so the run ends with one settled
             configuration that the chaos verdicts check.
- rolling:   a rolling restart of every node through the supervisor (followers
             first, the leader last after handing over), as an upgrade does.
- corrupt:   a follower is stopped and a bit flipped in a record of its WAL (a disk
             that lies); it must refuse to start (exit 4, `wal_corrupt`), and the
             heal rebuilds it (remove, wipe, add back: docs/storage.md).
- clock:     some nodes' clocks run fast or slow, within the cluster's
             max_clock_drift (raftproc.runtime.skew; the cluster runs with
             RAFTPROC_CLOCK_DIR), so read leases are tried against skewed time.

A fault that cannot be injected when its time comes (no leader to change the
configuration, no WAL to corrupt) is recorded as skipped, and not counted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from raftproc.config import NodeAddress
from raftproc.ops.cluster import Cluster, ClusterError
from raftproc.ops.corrupt import corrupt_wal
from raftproc.ops.netns import NetnsLab
from raftproc.runtime.skew import write_rate

MEMBER_FAULTS = ("remove-leader", "remove-follower", "replace-leader", "replace-follower")
LEADER_WAIT_S = 10.0
CORRUPT_START_S = 30.0  # a node on a corrupt WAL exits within this, however loaded the machine


@dataclass
class PlannedFault:
    at: float  # seconds after the start
    kind: str
    victims: str  # leader | follower | minority | majority | all | split-leader-minority | ...
    hold: float


@dataclass
class FaultRecord:
    kind: str
    victims: str
    nodes: list[int]
    start_ns: int
    end_ns: int | None = None
    detail: str = ""
    skipped: bool = False  # it could not be injected when its time came


def plan(seed: int, kinds: list[str], duration: float, *, interval: tuple[float, float] = (2.0, 5.0)) -> list[PlannedFault]:
    rng = random.Random(seed)
    out, t = [], rng.uniform(1.0, 2.0)
    while kinds and t < duration - 2.0:
        kind = rng.choice(kinds)
        choices = FAULT_KINDS[kind].victims
        # A kind with one choice draws nothing: one seed keeps giving the same schedule.
        victims = choices[0] if len(choices) == 1 else rng.choice(choices)
        hold = rng.uniform(1.0, 3.0)
        out.append(PlannedFault(round(t, 3), kind, victims, round(hold, 3)))
        t += hold + rng.uniform(*interval)
    return out


Heal = Callable[[], None]


@dataclass(frozen=True)
class Targets:
    """Whom a fault can strike when it starts: the members, and the leader if one is known."""

    ids: list[int]
    leader: int | None

    @property
    def followers(self) -> list[int]:
        return [i for i in self.ids if i != self.leader]


def _nothing_to_heal() -> None:
    """A handover or a rolling restart leaves nothing to undo."""


@dataclass
class Nemesis:
    cluster: Cluster
    rng: random.Random
    lab: NetnsLab | None = None
    log: Callable[[str], None] = print
    records: list[FaultRecord] = field(default_factory=list)
    # Where a node that joins lives (None: free loopback ports), and the highest id
    # there is room for (network namespaces are made before the run).
    place: Callable[[int], NodeAddress] | None = None
    max_node_id: int | None = None
    member_timeout: float = 20.0
    want_in: set[int] = field(default_factory=set)  # nodes to (re-)add at the heal
    corrupted: set[int] = field(default_factory=set)  # nodes to rebuild at the heal
    # What a fault showed that must not happen (a corrupt WAL that did not refuse to start).
    violations: list[str] = field(default_factory=list)
    clock_dir: Path | None = None  # where the nodes read their clock rates (raftproc.runtime.skew)
    max_clock_drift: float = 0.05
    # Each fault's start and heal as an `action` event of the run's recording
    # (raftproc.ops.watch.Collector.note), so a replay shows them on its timeline.
    note: Callable[..., object] | None = None

    def members(self) -> list[int]:
        """The nodes of the configuration the nemesis aims for (removed nodes stay
        stopped)."""
        removed = self.cluster.removed()
        return sorted(n for n in self.cluster.config.nodes if n not in removed)

    def inject(self, fault: PlannedFault) -> Heal:
        """Start a fault; return what heals it."""
        ids = self.members()
        leader = self.cluster.leader()
        kind = FAULT_KINDS[fault.kind]
        if leader is None and kind.needs_leader:
            # Just after another fault's heal the cluster may be electing: a fault that
            # needs a leader waits for one, briefly, before it is skipped.
            try:
                leader = self.cluster.wait_for_leader(timeout=LEADER_WAIT_S)
            except ClusterError:
                leader = None
        record = FaultRecord(fault.kind, fault.victims, [], time.monotonic_ns())
        heal = kind.start(self, fault, record, Targets(ids, leader))
        record.skipped = not record.nodes
        self.records.append(record)
        self.log(f"fault {fault.kind} {fault.victims} nodes {record.nodes} {record.detail}".rstrip())
        self._record("start", record, detail=f"{fault.victims} {record.nodes} {record.detail}".strip())
        return self._healer(heal, record)

    def _pick(self, victims: str, among: Targets) -> list[int]:
        ids, leader, followers = among.ids, among.leader, among.followers
        if victims == "leader":
            return [leader] if leader else [self.rng.choice(ids)]
        if victims == "follower":
            return [self.rng.choice(followers)]
        if victims == "minority":
            return self.rng.sample(ids, max(1, len(ids) // 2))
        if victims == "majority":
            return self.rng.sample(ids, len(ids) // 2 + 1)
        return list(ids)

    # --- one handler per kind of fault (FAULT_KINDS below): inject it, fill in the record, return its heal

    def _signal_processes(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        """kill, power, stop, pause: a signal to each running victim."""
        record.nodes = [n for n in self._pick(fault.victims, among) if self.cluster.process(n).state == "running"]
        act = {"pause": self.cluster.pause, "stop": self.cluster.stop}.get(fault.kind, self.cluster.kill)
        for n in record.nodes:
            act(n)
        return self._resume(record.nodes) if fault.kind == "pause" else self._restart(record.nodes)

    def _cut_links(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        lab = self._lab()
        record.nodes, record.detail = self._partition(fault.victims, among.ids, among.leader)
        return lab.heal_cuts

    def _slow_links(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        lab = self._lab()
        record.nodes = self._pick(fault.victims, among)
        record.detail = ",".join(sorted({lab.slow(n) for n in record.nodes}))
        return lab.heal_slow

    def _skew_clocks(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        nodes = self._pick(fault.victims, among)
        record.nodes, record.detail = nodes, self._skew(nodes)

        def heal() -> None:
            self._skew(nodes, real=True)

        return heal

    def _hand_over(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        record.nodes, record.detail = self._transfer(among.leader, among.followers)
        return _nothing_to_heal

    def _change_members(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        record.nodes, record.detail = self._member(fault.victims, among.leader, among.followers)
        return self.settle_members

    def _restart_in_turn(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        record.nodes, record.detail = self._rolling()  # every node is back when it returns
        return _nothing_to_heal

    def _corrupt_a_wal(self, fault: PlannedFault, record: FaultRecord, among: Targets) -> Heal:
        record.nodes, record.detail = self._corrupt(among.leader, among.followers)
        return self.rebuild_corrupted

    def _lab(self) -> NetnsLab:
        assert self.lab is not None, "partition and slow faults need network namespaces (run_chaos drops them without)"
        return self.lab

    def _healer(self, heal: Heal, record: FaultRecord) -> Heal:
        def heal_and_record() -> None:
            heal()
            record.end_ns = time.monotonic_ns()
            self.log(f"healed {record.kind} nodes {record.nodes}")
            self._record("done", record, message="healed")

        return heal_and_record

    def _record(self, phase: str, record: FaultRecord, **said: str) -> None:
        if self.note is not None:
            node = record.nodes[0] if len(record.nodes) == 1 else None
            self.note("action", action=record.kind, phase=phase, node=node, **said)

    def _transfer(self, leader: int | None, followers: list[int]) -> tuple[list[int], str]:
        if leader is None or not followers:
            return [], "no leader to hand over from"
        target = self.rng.choice(followers)
        client = self.cluster.client(timeout=3)
        try:
            new = client.transfer(target, ask=leader)
            return [leader, target], f"node {new} leads"
        except Exception as e:  # a transfer may fail under other faults; that is data, not an error
            return [leader, target], f"not completed: {e}"
        finally:
            client.close()

    def _rolling(self) -> tuple[list[int], str]:
        try:
            result = self.cluster.rolling_restart(timeout=20)
        except Exception as e:  # noqa: BLE001 - a restart that stalls is data; the heal starts what is down
            return [], f"not completed: {e}"
        gaps = ", ".join(f"{g * 1000:.1f}" for g in result["handover_gaps_s"]) or "none logged"
        return result["order"], f"{len(result['order'])} nodes in {result['seconds']:.1f} s, leaderless at handover (ms): {gaps}"

    def _member(self, victims: str, leader: int | None, followers: list[int]) -> tuple[list[int], str]:
        if leader is None or not followers:
            return [], "no leader to change the configuration"
        victim = leader if victims.endswith("leader") else self.rng.choice(followers)
        if victims.startswith("replace"):
            new = max(self.cluster.config.nodes) + 1
            if self.max_node_id is not None and new > self.max_node_id:
                victims = "remove"  # no room for another node: remove and re-add instead
            else:
                try:
                    self.cluster.join(self.member_timeout, place=self.place)
                except Exception as e:  # noqa: BLE001 - an unfinished change is data; the heal finishes it
                    self.want_in.add(new)
                    return [new], f"node {new} did not join yet: {e}"
        try:
            self.cluster.remove(victim, self.member_timeout)
        except Exception as e:  # noqa: BLE001 - as above; whether it happened is unknown, so add it back
            self.want_in.add(victim)
            return [victim], f"node {victim} not removed yet: {e}"
        if victims.startswith("replace"):
            return [victim, new], f"node {new} replaced node {victim}"
        self.want_in.add(victim)
        return [victim], f"node {victim} removed"

    def settle_members(self) -> None:
        """Add back every node a member fault left out (re-running an add goes on
        from wherever the change stands)."""
        for n in sorted(self.want_in):
            try:
                self.cluster.add(n, self.member_timeout)
                self.want_in.discard(n)
                self.log(f"node {n} is a voter again")
            except Exception as e:  # noqa: BLE001 - tried again at the final heal; the verdicts judge the end state
                self.log(f"node {n} not added back yet: {e}")

    def _corrupt(self, leader: int | None, followers: list[int]) -> tuple[list[int], str]:
        running = [n for n in followers if self.cluster.process(n).state == "running"]
        if leader is None or not running:
            return [], "skipped: no running follower under a leader"
        victim = self.rng.choice(running)
        self.cluster.stop(victim)
        try:
            done = corrupt_wal(self.cluster.config.node_data_dir(victim), self.rng)
        except FileNotFoundError as e:
            self.cluster.start(victim)
            return [], f"skipped: {e}"
        self.corrupted.add(victim)
        try:
            self.cluster.start(victim, wait=CORRUPT_START_S)
        except ClusterError as e:
            refused = "code 4" in str(e)
            if not refused:
                self.violations.append(f"node {victim} with a corrupt WAL ({done}) failed otherwise: {e}")
            return [victim], f"{done}; refused to start: {str(e)[:200]}"
        answered = self.cluster.node_status(victim) is not None
        self.violations.append(
            f"node {victim} "
            + (
                f"started on a corrupt WAL ({done})"
                if answered
                else f"neither refused nor started on a corrupt WAL within {CORRUPT_START_S:.0f} s ({done})"
            )
        )
        return [victim], f"{done}; NOT refused"

    def rebuild_corrupted(self) -> None:
        for n in sorted(self.corrupted):
            try:
                self.cluster.rebuild(n, timeout=max(self.member_timeout, 60.0))
                self.corrupted.discard(n)
                self.log(f"node {n} rebuilt")
            except Exception as e:  # noqa: BLE001 - tried again at the final heal; the verdicts judge the end state
                self.log(f"node {n} not rebuilt yet: {e}")

    def _skew(self, nodes: list[int], *, real: bool = False) -> str:
        """Each node's clock a little fast or slow, within max_clock_drift (or back to real time)."""
        assert self.clock_dir is not None, "the cluster must run with RAFTPROC_CLOCK_DIR for clock faults"
        rates = {
            n: 1.0 if real else round(1 + self.rng.choice((-1, 1)) * self.rng.uniform(0.5, 1.0) * self.max_clock_drift, 4) for n in nodes
        }
        for n, rate in rates.items():
            write_rate(self.clock_dir, n, rate)
        return " ".join(f"{n}:x{rate}" for n, rate in rates.items())

    def _restart(self, nodes: list[int]) -> Heal:
        def heal() -> None:
            for n in nodes:
                if self.cluster.process(n).state not in ("running", "paused"):
                    self.cluster.start(n)

        return heal

    def _resume(self, nodes: list[int]) -> Heal:
        def heal() -> None:
            for n in nodes:
                if self.cluster.process(n).state == "paused":
                    self.cluster.resume(n)

        return heal

    def _partition(self, victims: str, ids: list[int], leader: int | None) -> tuple[list[int], str]:
        lab = self.lab
        assert lab is not None
        leader = leader or self.rng.choice(ids)
        others = [i for i in ids if i != leader]
        if victims in ("isolate-leader", "isolate-follower"):
            lone = leader if victims == "isolate-leader" else self.rng.choice(others)
            side = [lone]
        elif victims in ("split-leader-minority", "split-leader-majority"):
            size = len(ids) // 2 if victims == "split-leader-minority" else len(ids) // 2 + 1
            side = [leader] + self.rng.sample(others, size - 1)
        else:  # one-way: some links carry traffic in one direction only
            pairs = [(a, b) for a in ids for b in ids if a != b]
            chosen = self.rng.sample(pairs, max(1, len(pairs) // 4))
            for a, b in chosen:
                lab.cut(a, b)
            return sorted({a for a, _ in chosen}), "cuts " + " ".join(f"{a}-x>{b}" for a, b in chosen)
        rest = [i for i in ids if i not in side]
        for a in side:
            for b in rest:
                lab.cut(a, b)
                lab.cut(b, a)
        return sorted(side), f"{sorted(side)} | {sorted(rest)}"

    def heal_all(self) -> None:
        if self.lab is not None:
            self.lab.heal_cuts()
            self.lab.heal_slow()
        if self.clock_dir is not None:
            self._skew(self.members(), real=True)
        removed = self.cluster.removed()
        for p in self.cluster.processes():
            if p.state == "paused":
                self.cluster.resume(p.node_id)
            elif p.state not in ("running",) and p.node_id not in removed | self.corrupted:
                self.cluster.start(p.node_id)
        self.rebuild_corrupted()
        self.settle_members()
        for r in self.records:
            if r.end_ns is None:
                r.end_ns = time.monotonic_ns()


@dataclass(frozen=True)
class FaultKind:
    victims: tuple[str, ...]  # what the plan draws a fault's victims from (a repeat weighs a choice)
    start: Callable[[Nemesis, PlannedFault, FaultRecord, Targets], Heal]
    needs_leader: bool = False  # without a leader when its time comes, it waits for one (Nemesis.inject)


SOME_NODES = ("leader", "follower", "minority", "all")
LEADER_MOSTLY = ("leader", "leader", "follower", "minority", "majority")
# Adding a kind of fault is one entry here (and a paragraph in the module's docstring).
FAULT_KINDS: dict[str, FaultKind] = {
    "kill": FaultKind(LEADER_MOSTLY, Nemesis._signal_processes),
    "pause": FaultKind(LEADER_MOSTLY, Nemesis._signal_processes),
    "power": FaultKind(SOME_NODES, Nemesis._signal_processes),
    "stop": FaultKind(LEADER_MOSTLY, Nemesis._signal_processes),
    "partition": FaultKind(
        ("isolate-leader", "isolate-follower", "split-leader-minority", "split-leader-majority", "one-way"), Nemesis._cut_links
    ),
    "slow": FaultKind(SOME_NODES, Nemesis._slow_links),
    "transfer": FaultKind(("leader",), Nemesis._hand_over, needs_leader=True),
    "member": FaultKind(MEMBER_FAULTS, Nemesis._change_members, needs_leader=True),
    "rolling": FaultKind(("all",), Nemesis._restart_in_turn, needs_leader=True),
    "corrupt": FaultKind(("follower",), Nemesis._corrupt_a_wal, needs_leader=True),
    "clock": FaultKind(SOME_NODES, Nemesis._skew_clocks),
}
ALL_FAULTS = tuple(FAULT_KINDS)
