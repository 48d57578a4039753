"""A chaos run: cluster up, concurrent clients recording every operation, faults
from a seeded schedule, heal, then verdicts.

Verdicts:
- linearizable: the whole history, per key, with raftproc.checker (final reads of
  every key after healing are part of it);
- no acknowledged write lost: every final read returns a value some write produced
  (or absent only where a delete may have run or nothing was acknowledged);
- converged: after healing, every node applies the same log (digests) in time;
- one settled configuration: every running node holds the same configuration,
  not joint, without learners, whose voters are exactly the nodes the run meant
  to keep (member faults add, remove and replace nodes);
- storage recovers cleanly: each node's newest snapshot and the WAL after it open
  without corruption after shutdown.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from raftproc.checker.spill import check_history_file
from raftproc.config import ClusterConfig, NodeAddress
from raftproc.ops.cluster import Cluster, ClusterError
from raftproc.ops.layout import local_config
from raftproc.ops.logs import read_lines
from raftproc.ops.nemesis import ALL_FAULTS, FaultRecord, Nemesis, PlannedFault, plan
from raftproc.ops.netns import NetnsLab, available
from raftproc.ops.report import write_report
from raftproc.ops.watch import Collector
from raftproc.ops.workload import Workload
from raftproc.runtime.recovery import recover_state
from raftproc.runtime.skew import CLOCK_DIR_ENV
from raftproc.runtime.tls import client_context_for
from raftproc.runtime.wal import POWER_LOSS_ENV, WalCorruption

# Network namespaces made beyond the cluster's first nodes, for nodes that join
# during a run with member faults (a replace when none is left removes and re-adds).
SPARE_SLOTS = 4


@dataclass
class ChaosOptions:
    out: Path
    nodes: int = 5
    duration: float = 60.0
    faults: list[str] = field(default_factory=lambda: list(ALL_FAULTS))
    clients: int = 8
    seed: int = 1
    keys: int | None = None
    launcher: list[str] | None = None  # tests plant bugs through this
    op_timeout: float = 3.0
    # Snapshot every this many entries (None: the node default). Small values make
    # snapshots, compaction and InstallSnapshot happen during the faults.
    snapshot_every: int | None = None
    read_mode: str = "index"  # how the clients' gets read: index (ReadIndex), log or lease
    tls: bool = False  # mutual TLS on every connection (certificates minted in out/run/tls)
    protocol: str = "native"  # how the clients talk: raftproc's client protocol, or "redis" (RESP, redis-py)


@dataclass
class ChaosResult:
    verdicts: list[tuple[str, bool, str]]
    summary: list[tuple[str, Any]]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.verdicts)

    def text(self, out: Path) -> str:
        """The summary, each verdict (a failure with its detail) and the notes, as
        scripts/chaos.py prints them at the end of a run kept in `out`."""
        lines = [""] + [f"  {name:<20} {value}" for name, value in self.summary] + [""]
        for name, ok, detail in self.verdicts:
            lines.append(f"  {'PASS' if ok else 'FAIL'}  {name}")
            if not ok:
                lines.append("        " + detail.replace("\n", "\n        "))
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"\n  history, logs and report: {out}/ (open {out}/report.html)")
        return "\n".join(lines)


@dataclass
class ChaosRun:
    """A run under way: what `run_chaos` set up, handed to each step after it."""

    opts: ChaosOptions
    out: Path  # opts.out, resolved
    cluster: Cluster
    faults: list[str]  # the kinds this machine can inject (partition and slow need namespaces)
    lab: NetnsLab | None
    notes: list[str]
    say: Callable[[str], None]
    # The wall clock and the monotonic clock read together at the start: the nodes'
    # logs carry wall time, the report draws monotonic time.
    wall0: float = field(default_factory=time.time)
    mono0: float = field(default_factory=time.monotonic)


def run_chaos(opts: ChaosOptions, say: Callable[[str], None] = print) -> ChaosResult:
    check_faults(opts.faults)
    check_protocol(opts.protocol, opts.read_mode)
    out = _fresh_directory(opts.out)
    faults, lab, notes = _injectable(opts, say)
    try:
        cluster = _create_cluster(opts, out, faults, lab)
        run = ChaosRun(opts, out, cluster, faults, lab, notes, say)
        try:
            return _run(run)
        finally:
            cluster.down(timeout=3)
    finally:
        if lab is not None:
            lab.teardown()


def check_faults(faults: list[str]) -> None:
    unknown = set(faults) - set(ALL_FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(ALL_FAULTS)}")


def check_protocol(protocol: str, read_mode: str) -> None:
    if protocol not in ("native", "redis"):
        raise ValueError(f"unknown protocol {protocol!r}; choose native or redis")
    if protocol == "redis" and read_mode != "index":
        # The RESP port reads one way (every GET through ReadIndex): a run must not
        # report lease or log reads it never made.
        raise ValueError(f"over the Redis protocol every GET is a ReadIndex read: --read-mode {read_mode} needs --protocol native")


def _fresh_directory(path: Path) -> Path:
    out = path.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def _injectable(opts: ChaosOptions, say: Callable[[str], None]) -> tuple[list[str], NetnsLab | None, list[str]]:
    """The faults to run, the network namespaces that link faults need (set up), and
    a note for each kind this machine cannot inject."""
    faults = list(opts.faults)
    notes: list[str] = []
    if not {"partition", "slow"} & set(faults):
        return faults, None, notes
    ok, why = available()
    if not ok:
        faults = [f for f in faults if f not in ("partition", "slow")]
        notes.append(f"partition and slow faults unavailable ({why}); running {faults}")
        say(notes[-1])
        return faults, None, notes
    lab = NetnsLab(opts.nodes + (SPARE_SLOTS if "member" in faults else 0))
    lab.setup()
    return faults, lab, notes


def _create_cluster(opts: ChaosOptions, out: Path, faults: list[str], lab: NetnsLab | None) -> Cluster:
    """The cluster's config written (nodes in `lab`'s namespaces when there is one),
    with the environment the faults need; not started yet."""
    env = {POWER_LOSS_ENV: "1"} if "power" in faults else {}
    if "clock" in faults:
        env[CLOCK_DIR_ENV] = str(out / "run" / "clocks")
    storage: dict[str, Any] = {}
    if opts.snapshot_every:
        storage = dict(snapshot_entries=opts.snapshot_every, segment_bytes=max(4096, opts.snapshot_every * 100))
    if lab is None:
        cluster = Cluster(out / "run", launcher=opts.launcher, env=env)
        cluster.create(local_config(opts.nodes, out / "data", out / "logs", **storage), tls=opts.tls)
        return cluster
    cfg = ClusterConfig(
        nodes={i: _lab_node(lab, i) for i in range(1, opts.nodes + 1)},
        data_dir=out / "data",
        log_dir=out / "logs",
        **storage,
    )
    in_namespace = lab.launcher()[:-3]  # ip netns exec <ns of node {id}>
    cluster = Cluster(out / "run", launcher=in_namespace + (opts.launcher or [sys.executable, "-m", "raftproc.node"]), env=env)
    cluster.create(cfg, tls=opts.tls)
    return cluster


def _lab_node(lab: NetnsLab, i: int) -> NodeAddress:
    """Node `i`'s addresses in its network namespace: the same ports on every node."""
    host = lab.addr(i)
    return NodeAddress(i, (host, 7100), (host, 7200), metrics=(host, 7300), redis=(host, 7400))


def _run(run: ChaosRun) -> ChaosResult:
    # The whole run is recorded for `supervisor.py web --replay OUT` (raftproc.ops.watch).
    recorder = Collector(lambda: run.cluster.config, processes=run.cluster.process_states, record_to=run.out / "watch" / "events.jsonl")
    recorder.start()
    try:
        return _run_recorded(run, recorder)
    finally:
        recorder.stop()


def _run_recorded(run: ChaosRun, recorder: Collector) -> ChaosResult:
    opts, cluster = run.opts, run.cluster
    cluster.up(wait=20)
    workload = _workload(run)
    # On a terminal the progress line rewrites itself (\r); into a file or a pipe,
    # each line stands alone and the progress comes every 5 s instead of twice a second.
    tty = sys.stdout.isatty()
    back = "\r" if tty else ""
    nemesis = _nemesis(run, recorder, log=lambda m: run.say(f"{back}{_clock(run.mono0)} {m}" + (" " * 20 if tty else "")))
    stopped = _drive(plan(opts.seed, run.faults, opts.duration), opts.duration, nemesis, workload, tty, run.mono0)
    run.say(f"{back}{_clock(run.mono0)} healing everything and checking")
    nemesis.heal_all()

    verdicts = _judge_service(cluster, nemesis, workload, run.out, opts.clients)
    cluster.down(timeout=5)
    cfg = cluster.config  # with the nodes that joined during the run
    verdicts.append(_judge_storage(cfg))
    events, counted = _logged(cfg, run.wall0, run.mono0)
    verdicts += _judge_alarms(nemesis, run.faults, counted)
    summary = _summary(opts, len(workload.keys), workload.history, nemesis, events, counted)
    fault_rows = [_fault_row(r) for r in nemesis.records]
    (run.out / "faults.json").write_text(json.dumps(fault_rows, indent=1))
    write_report(
        run.out / "report.html",
        title=f"raftproc chaos, seed {opts.seed}",
        nodes=sorted(cfg.nodes),
        t0=run.mono0,
        t1=stopped,
        faults=fault_rows,
        events=events,
        history=workload.history.read(),
        verdicts=verdicts,
        summary=summary,
        replay=f"python scripts/supervisor.py web --replay {run.out}",
    )
    return ChaosResult(verdicts, summary, run.notes)


def _workload(run: ChaosRun) -> Workload:
    """The clients, their history streamed to history.jsonl; not started yet."""
    opts, cfg = run.opts, run.cluster.config
    redis = opts.protocol == "redis"
    return Workload(
        _member_addresses(run.cluster, redis=redis),
        clients=opts.clients,
        keys=opts.keys or max(2, opts.clients // 2),
        seed=opts.seed,
        op_timeout=opts.op_timeout,
        read_mode=opts.read_mode,
        tls=client_context_for(cfg.client_tls()),
        members=lambda: _member_addresses(run.cluster, redis=redis),
        history=run.out / "history.jsonl",
        protocol=opts.protocol,
        redis_tls=cfg.client_tls(),
    )


def _fault_row(r: FaultRecord) -> dict[str, Any]:
    """A fault as faults.json and the report keep it, in seconds."""
    return {
        "kind": r.kind,
        "victims": r.victims,
        "nodes": r.nodes,
        "detail": r.detail,
        "skipped": r.skipped,
        "start": r.start_ns / 1e9,
        "end": None if r.end_ns is None else r.end_ns / 1e9,
    }


def _nemesis(run: ChaosRun, recorder: Collector, log: Callable[[str], None]) -> Nemesis:
    cluster, lab = run.cluster, run.lab
    nemesis = Nemesis(cluster, random.Random(run.opts.seed), lab, log=log, note=recorder.note)
    if CLOCK_DIR_ENV in cluster.env:
        nemesis.clock_dir, nemesis.max_clock_drift = Path(cluster.env[CLOCK_DIR_ENV]), cluster.config.max_clock_drift
    if lab is not None:
        nemesis.place = lambda n: _lab_node(lab, n)  # a joining node serves Redis (and metrics) too
        nemesis.max_node_id = len(lab.nodes)
    return nemesis


def _drive(schedule: list[PlannedFault], duration: float, nemesis: Nemesis, workload: Workload, tty: bool, mono0: float) -> float:
    """Run the workload and the fault schedule for `duration`; returns when it stopped."""
    start = time.monotonic()
    workload.start(until=start + duration)
    last_progress = [0.0]

    def progress() -> None:
        now = time.monotonic()
        if not tty and now - last_progress[0] < 5.0:
            return
        last_progress[0] = now
        c = workload.history.counts
        line = f"{_clock(mono0)} ops ok {c['ok']} failed {c['failed']} unknown {c['unknown']}"
        sys.stdout.write(f"\r{line}   " if tty else line + "\n")
        sys.stdout.flush()

    def wait_until(t: float) -> None:
        while time.monotonic() < t:
            progress()
            time.sleep(min(0.5, max(t - time.monotonic(), 0)))  # progress-line interval

    for fault in schedule:
        wait_until(start + fault.at)
        heal = nemesis.inject(fault)
        wait_until(time.monotonic() + fault.hold)
        heal()
    wait_until(start + duration)
    workload.stop()
    return time.monotonic()


def _judge_service(cluster: Cluster, nemesis: Nemesis, workload: Workload, out: Path, final_client: int) -> list[tuple[str, bool, str]]:
    """What clients were promised: one converged cluster, a linearizable history, nothing lost."""
    verdicts: list[tuple[str, bool, str]] = []
    try:
        cluster.wait_for_leader(timeout=20)
        statuses = cluster.wait_converged(timeout=30)
        verdicts.append(
            (
                "converged",
                True,
                f"{len(statuses)} nodes applied the same log (index {statuses[0]['last_applied']}, digest {statuses[0]['log_digest'][:16]})",
            )
        )
        verdicts.append(settled_configuration(statuses, nemesis.members()))
    except ClusterError as e:
        verdicts.append(("converged", False, str(e)))
    unfinished = workload.final_reads()
    if unfinished:
        verdicts.append(("final reads finished", False, unfinished))
    workload.history.close()
    lost: list[str] = []
    result = check_history_file(
        out / "history.jsonl", out / "check-scratch", visit=lambda key, records: lost.extend(lost_writes(records, final_client))
    )
    shutil.rmtree(out / "check-scratch", ignore_errors=True)
    verdicts.append(("linearizable", result.ok, result.summary()))
    verdicts.append(("no acknowledged write lost", not lost, "\n".join(lost) or "every final read returns a written value"))
    return verdicts


def _judge_storage(cfg: ClusterConfig) -> tuple[str, bool, str]:
    bad = []
    for n in cfg.nodes:
        try:
            recover_state(cfg.node_data_dir(n), warn=lambda event, **f: None, segment_bytes=cfg.segment_bytes).wal.close()
        except WalCorruption as e:
            bad.append(str(e))
    return ("storage recovers cleanly", not bad, "\n".join(bad) or f"{len(cfg.nodes)} nodes' snapshots and WALs recovered")


DIVERGENCE_EVENTS = ("log_diverged", "peer_diverged", "peer_log_regressed")


def _judge_alarms(nemesis: Nemesis, faults: list[str], counted: dict[str, int]) -> list[tuple[str, bool, str]]:
    verdicts = []
    if nemesis.violations or "corrupt" in faults:
        verdicts.append(
            (
                "corrupt storage refused",
                not nemesis.violations,
                "\n".join(nemesis.violations) or "every node whose WAL was corrupted refused to start and was rebuilt",
            )
        )
    diverged = sum(counted[e] for e in DIVERGENCE_EVENTS)
    verdicts.append(
        (
            "no history diverged",
            not diverged,
            f"{diverged} divergence alarms in the nodes' logs ({', '.join(DIVERGENCE_EVENTS)})"
            if diverged
            else "no node found its log contradicting another's",
        )
    )
    return verdicts


def _summary(
    opts: ChaosOptions, keys: int, history: Any, nemesis: Nemesis, events: list[dict[str, Any]], counted: dict[str, int]
) -> list[tuple[str, Any]]:
    c = history.counts
    return [
        ("seed", opts.seed),
        ("nodes", opts.nodes),
        ("reads", opts.read_mode),
        ("transport", "mutual TLS" if opts.tls else "plaintext"),
        ("clients speak", "Redis (RESP, redis-py)" if opts.protocol == "redis" else "raftproc's client protocol"),
        ("duration s", opts.duration),
        ("clients", opts.clients),
        ("keys", keys),
        ("operations ok", c["ok"]),
        ("operations failed", c["failed"]),
        ("operations unknown", c["unknown"]),
        ("faults injected", sum(not r.skipped for r in nemesis.records)),
        ("faults skipped", sum(r.skipped for r in nemesis.records)),
        ("leader changes", sum(1 for e in events if e["event"] == "became_leader")),
        ("snapshots taken", counted["snapshot_saved"]),
        ("snapshots installed", counted["snapshot_installed"]),
        # The history streams to disk and is checked a key at a time: this stays flat with the run's length.
        ("chaos process peak RSS MB", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)),
        ("faults", ", ".join(f"{r.kind}:{r.victims}" for r in nemesis.records if not r.skipped) or "none"),
    ]


def _member_addresses(cluster: Cluster, *, redis: bool = False) -> dict[int, Any]:
    """The client (or RESP) addresses of the nodes the run has not removed (joined ones too)."""
    cfg, removed = cluster.config, cluster.removed()
    if redis:
        return {n: a.redis for n, a in cfg.nodes.items() if n not in removed and a.redis is not None}
    return {n: a.client for n, a in cfg.nodes.items() if n not in removed}


def _logged(cfg: ClusterConfig, wall0: float, mono0: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """From the nodes' JSON logs: the role changes and restarts the report draws (with
    their time on the run's monotonic clock), and how many snapshots were taken and
    installed and divergence alarms raised."""
    events = []
    snapshot_events = {"snapshot_saved": 0, "snapshot_installed": 0, **{e: 0 for e in DIVERGENCE_EVENTS}}
    for n in cfg.nodes:
        path = cfg.node_log_file(n)
        if path.exists():
            for e in read_lines(path):
                if e.get("event") in snapshot_events:
                    snapshot_events[e["event"]] += 1
                if e.get("event") in ("became_leader", "became_follower", "node_stopped", "wal_recovered") and "ts" in e:
                    e["_t"] = mono0 + datetime.fromisoformat(e["ts"]).timestamp() - wall0
                    events.append(e)
    return events, snapshot_events


def lost_writes(records: list[dict[str, Any]], final_client: int) -> list[str]:
    """Final reads (by the client numbered `final_client`) that name no write."""
    written: dict[str, set[str]] = {}
    acked: dict[str, bool] = {}
    maybe_deleted: dict[str, bool] = {}
    for r in records:
        if r["op"] in ("put", "cas") and (r["ok"] or r["ok"] is None):
            written.setdefault(r["key"], set()).add(r["value"])
            acked[r["key"]] = acked.get(r["key"], False) or bool(r["ok"])
        if r["op"] == "delete" and r["ok"] is not False:
            maybe_deleted[r["key"]] = True
    problems = []
    for r in records:
        if r["client"] != final_client or r["op"] != "get" or not r["ok"]:
            continue
        key, value = r["key"], r["output"]
        if value is None and acked.get(key) and not maybe_deleted.get(key):
            problems.append(f"key {key!r}: acknowledged writes, no delete, final read finds it absent")
        elif value is not None and value not in written.get(key, set()):
            problems.append(f"key {key!r}: final read returns {value!r}, which no write produced")
    return problems


def _clock(mono0: float) -> str:
    return f"[{time.monotonic() - mono0:6.1f}s]"


def settled_configuration(statuses: list[dict[str, Any]], members: list[int]) -> tuple[str, bool, str]:
    """Every running node holds one configuration: not joint, no learners left,
    voters exactly `members`."""
    seen = {json.dumps(s["membership"], sort_keys=True) for s in statuses}
    m = statuses[0]["membership"]
    problems = []
    if len(seen) > 1:
        problems.append("nodes hold different configurations: " + "; ".join(sorted(seen)))
    if m["outgoing"]:
        problems.append(f"still joint (outgoing {m['outgoing']})")
    if m["learners"]:
        problems.append(f"learners left: {m['learners']}")
    if sorted(m["voters"]) != members:
        problems.append(f"voters {sorted(m['voters'])}, expected {members}")
    running = sorted(s["node"] for s in statuses)
    if running != members:
        problems.append(f"running nodes {running}, expected {members}")
    return "one settled configuration", not problems, "; ".join(problems) or f"voters {members} on every node"
