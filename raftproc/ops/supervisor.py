"""Run and watch a local raftproc cluster: `raftproc-supervisor` (or scripts/supervisor.py).

    raftproc-supervisor up [-n 5] [--tls] [--slow N] [--link-delay MS]
                                        start a cluster (default ports 7101.., 7201..); with
                                        --tls, mutual TLS on both ports (certificates in
                                        run/tls, named in run/config.toml); --slow N runs
                                        every Raft timer N times slower and --link-delay
                                        holds back every peer message, to watch it (`web`);
                                        once the run directory holds one, `up` starts it
                                        again, with the members it has now (--fresh: a new one)
    raftproc-supervisor web [--listen 127.0.0.1:7500] [--replay RUN_DIR|FILE] [--config PATH]
                                        the live page: watch the cluster, break it, replay a run
    raftproc-supervisor status          pid, role, term, commit, applied, RSS, CPU
    raftproc-supervisor kill|stop|start|restart|pause|resume ID
                                        (stop: a leader hands over leadership first)
    raftproc-supervisor rolling-restart every node in turn, leader last, while serving
    raftproc-supervisor partition ID    cut a node off from the others, both ways
    raftproc-supervisor split 1,2 3,4,5 cut the cluster into groups
    raftproc-supervisor slow FROM TO MS hold back what FROM sends TO by MS ms (0: no more)
    raftproc-supervisor heal            every cut and slowed link is whole again
    raftproc-supervisor transfer [ID]   hand leadership to ID (default: the leader picks)
    raftproc-supervisor join            start a new node and add it (learner, then voter)
    raftproc-supervisor add|remove ID   add a node the config lists / remove one and stop it
    raftproc-supervisor rebuild ID      a node whose data is bad (corrupt WAL, diverged): remove it,
                                        wipe it, add it back to catch up (docs/storage.md)
    raftproc-supervisor members         voters, learners, addresses, match indexes
    raftproc-supervisor logs [-f] [--tail N] [--node N] [--event E]
                                        the nodes' logs as one stream; -f follows them, from
                                        the last 10 lines (--tail N: the last N; 0: only new ones)
    raftproc-supervisor timeline        the leader's election and the newest traced write
                                        (raftproc set x 10 --trace), from the logs
    raftproc-supervisor down

State lives in a run directory (--run-dir, default run/), so any later invocation
finds the cluster again; the cluster's data and logs live in it too (run/data,
run/logs) unless --data-dir/--log-dir say otherwise.

Exit codes are the client CLI's (raftproc.cli; docs/operations.md, Exit codes): 0 done
(status, up: healthy), 1 failed, 2 usage, 5 a member does not answer, 6 no leader,
nodes that disagree on it, or a diverged log, 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raftproc.client import ClientError
from raftproc.config import ClusterConfig
from raftproc.ops.cluster import Cluster, ClusterError
from raftproc.ops.layout import local_config
from raftproc.ops.links import LinkTable, parse_groups
from raftproc.ops.logs import check_event, merged, show
from raftproc.ops.timeline import render, story

# The client CLI's exit codes (raftproc.cli), so that a script reads both tools alike;
# tests/unit/test_exit_codes.py holds them equal.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NO_LEADER = 0, 1, 2, 5, 6
EXIT_INTERRUPTED = 130


def contradictions(cfg: ClusterConfig, args: argparse.Namespace) -> list[str]:
    """The options of `up` that ask for something other than the run directory's
    cluster is: starting it anyway would quietly run what was not asked for."""
    said = []
    if args.tls and cfg.tls is None:
        said.append("--tls, but the cluster there runs without TLS")
    if args.nodes is not None and args.nodes != len(cfg.nodes):
        said.append(f"-n {args.nodes}, but the cluster there has {len(cfg.nodes)} nodes")
    first = min(cfg.nodes)
    port = cfg.nodes[first].peer[1]
    if args.base_port and port != args.base_port + 100 + first:  # 0 asks for any free ports
        said.append(f"--base-port {args.base_port}, but node {first} there listens for peers on {port}")
    if args.slow is not None and cfg.tick_ms != 10 * args.slow:
        said.append(f"--slow {args.slow}, but the cluster there ticks every {cfg.tick_ms} ms")
    for option, wanted, there in (("--data-dir", args.data_dir, cfg.data_dir), ("--log-dir", args.log_dir, cfg.log_dir)):
        if wanted is not None and Path(wanted).resolve() != there:
            said.append(f"{option} {wanted}, but the cluster there uses {there}")
    return said


def cmd_up(cluster: Cluster, args: argparse.Namespace) -> int:
    if cluster.config_path.exists() and not args.fresh:
        # Its data says who the members are; a new config over it would contradict that.
        contrary = contradictions(cluster.config, args)
        if contrary:
            raise ClusterError(
                f"{cluster.run_dir} holds a cluster already, and `up` was asked for {'; '.join(contrary)}. "
                f"Run `up` without those options to start it as it is, or `down`, then `up --fresh` (or another --run-dir) "
                "to make a new cluster (remove its data directory first: the old logs name their own members)."
            )
        running = [p.node_id for p in cluster.processes() if p.state in ("running", "paused")]
        if running:
            raise ClusterError(f"a cluster is already running from {cluster.run_dir} (nodes {running}); run `down` first")
        cluster.up(wait=args.wait)
        removed = sorted(cluster.removed())
        print(
            f"cluster from {cluster.config_path} up again; leader is node {cluster.leader()}"
            + (f"; removed nodes {removed} stay stopped" if removed else "")
            + " (`up --fresh` makes a new cluster)"
        )
        return print_status(cluster, settled_rows(cluster, args.wait))
    run_dir = cluster.run_dir
    data_dir = Path(args.data_dir) if args.data_dir else run_dir / "data"
    log_dir = Path(args.log_dir) if args.log_dir else run_dir / "logs"
    base_port = 7000 if args.base_port is None else args.base_port
    slow = args.slow or 1
    cfg = local_config(args.nodes or 5, data_dir, log_dir, base_port=base_port or None, tick_ms=10 * slow, link_faults=True)
    cluster.create(cfg, tls=args.tls)
    if args.link_delay:
        table = LinkTable()
        table.slow_all(args.link_delay)
        table.save(cluster.run_dir)
    cluster.up(wait=args.wait * slow)
    slow_said = f"; Raft timers {slow}x slower" if slow > 1 else ""
    delay = f"; every peer message held back {args.link_delay} ms" if args.link_delay else ""
    print(
        f"cluster of {len(cfg.nodes)} up{' with mutual TLS' if args.tls else ''}{slow_said}{delay}; leader is node {cluster.leader()}; config {cluster.config_path}"
    )
    return print_status(cluster, settled_rows(cluster, args.wait * slow))


def cmd_links(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.cmd == "partition":
        missed = cluster.partition(args.id)
        done = f"node {args.id} is cut off from every other node"
    elif args.cmd == "split":
        try:
            groups = parse_groups("|".join(args.groups))
        except ValueError as e:
            raise ClusterError(str(e)) from None
        missed = cluster.split(groups)
        done = "cluster split into " + " | ".join(",".join(map(str, g)) for g in groups)
    elif args.cmd == "slow":
        missed = cluster.slow_link(args.src, args.dst, args.ms)
        done = (
            f"what node {args.src} sends node {args.dst} is held back {args.ms} ms"
            if args.ms
            else f"link {args.src} -> {args.dst} at full speed"
        )
    else:
        missed = cluster.heal()
        base = cluster.links().base_ms
        done = "every link is whole again" + (
            f" (every message still held back {base} ms: the slow motion of `up --link-delay`)" if base else ""
        )
    print(done)
    for node, why in sorted(missed.items()):
        print(f"  node {node} did not take it now ({why}); it will when it next starts", file=sys.stderr)
    return EXIT_OK


def verdict(answers: Mapping[int, Mapping[str, Any] | None]) -> tuple[int, str]:
    """The exit code and verdict `raftproc status` gives (raftproc.cli), from each
    member's status (None: it did not answer): 5 if a member does not answer, else 6
    if those that answer know no leader, name different ones, or a log diverged."""
    down = sorted(n for n, s in answers.items() if s is None)
    statuses = [s for s in answers.values() if s is not None]
    leaders = {s.get("leader") for s in statuses}
    if down:
        return EXIT_UNREACHABLE, f"unhealthy: nodes {down} do not answer"
    if any(s.get("diverged") for s in statuses):
        return EXIT_NO_LEADER, "unhealthy: DIVERGED HISTORIES, acknowledged writes may be lost (docs/storage.md)"
    if len(leaders) != 1 or None in leaders:
        return EXIT_NO_LEADER, f"unhealthy: leaders seen {sorted(map(str, leaders))}"
    return EXIT_OK, "healthy"


def members_answers(rows: list[dict[str, Any]], removed: set[int]) -> dict[int, dict[str, Any] | None]:
    """The status table as `verdict` reads it: a row has a role only if the node
    answered, and the nodes the supervisor removed (left stopped) are no members."""
    return {r["node"]: r if r.get("role") is not None else None for r in rows if r["node"] not in removed}


def settled_rows(cluster: Cluster, timeout: float) -> list[dict[str, Any]]:
    """The status table once every member follows the leader, or as it is at `timeout`:
    a cluster just elected a leader, and the last nodes to hear of it are on their way."""
    deadline = time.monotonic() + timeout
    rows = cluster.status_table()
    while verdict(members_answers(rows, cluster.removed()))[0] != EXIT_OK and time.monotonic() < deadline:
        time.sleep(0.1)  # poll interval of a wait-until loop
        rows = cluster.status_table()
    return rows


def print_status(cluster: Cluster, rows: list[dict[str, Any]]) -> int:
    print(
        f"{'node':>4} {'pid':>7} {'state':<11} {'role':<9} {'term':>5} {'leader':>6} {'commit':>7} {'applied':>7} {'rss MB':>7} {'cpu s':>6}  digest"
    )
    for r in rows:
        g = r.get
        print(
            f"{r['node']:>4} {str(g('pid') or '-'):>7} {r['state']:<11} {str(g('role', '-')):<9} {str(g('term', '-')):>5} "
            f"{str(g('leader', '-')):>6} {str(g('commit_index', '-')):>7} {str(g('last_applied', '-')):>7} "
            f"{str(g('rss_mb', '-')):>7} {str(g('cpu_s', '-')):>6}  {str(g('log_digest', '-'))[:12]}"
        )
    for r in rows:
        if r.get("diverged"):
            print(f"ALARM node {r['node']}: {r['diverged']} (docs/storage.md: what to do)")
    code, said = verdict(members_answers(rows, cluster.removed()))
    print(said, file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def cmd_membership(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.cmd == "join":
        print("starting a new node and adding it: a learner first, a voter once caught up (up to 60 s)", file=sys.stderr)
        node = cluster.join()
        print(f"node {node} joined: voters {cluster.members()['voters']}")
        return EXIT_OK
    if args.cmd == "members":
        m = cluster.members()
        print(f"leader {m['leader']} (term {m['term']}), voters {m['voters']}, learners {m['learners']}")
        for node, info in sorted(m["nodes"].items()):
            print(f"  node {node}: {info['role']:7} peer {info['peer']} client {info['client']} match {info['match_index']}")
        return EXIT_OK
    if args.cmd == "rebuild":
        print(f"rebuilding node {args.id}: remove, wipe, start as a new incarnation, add back (up to 120 s)", file=sys.stderr)
    result = getattr(cluster, args.cmd)(args.id)
    print(f"{args.cmd} node {args.id}: done; voters {result['membership']['voters']}")
    return EXIT_OK


def cmd_logs(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.node is not None and args.node not in cluster.config.nodes:
        raise ClusterError(f"node {args.node} is not in the cluster (nodes {sorted(cluster.config.nodes)})")
    paths = log_files(cluster)
    tail = args.tail if args.tail is not None or not args.follow else 10  # as `tail -f`
    try:
        for line in show(paths, args.node, set(args.event or ()) or None, tail=tail, follow=args.follow):
            print(line, flush=args.follow)
    except KeyboardInterrupt:
        pass  # how a follow ends
    return EXIT_OK


def _event(text: str) -> str:
    try:
        return check_event(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _line_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a count of lines, 0 or more, not {text!r}")
    return int(text)


def _node_count(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 99:
        raise argparse.ArgumentTypeError(f"a cluster has 1 to 99 nodes, not {n}")
    return n


def _slowness(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"--slow is 1 to 1000, not {n}")
    return n


def log_files(cluster: Cluster) -> list[Path]:
    """Every member's log file, also those not written yet (a follow reads them once they are)."""
    cfg = cluster.config
    return [cfg.node_log_file(n) for n in sorted(cfg.nodes)]


def cmd_timeline(cluster: Cluster) -> int:
    lines = story(merged(log_files(cluster)))
    print(render(lines))
    return EXIT_OK if lines else EXIT_FAILED


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="run")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("-n", "--nodes", type=_node_count, default=None, help="1 to 99 (default 5)")
    up.add_argument(
        "--base-port",
        type=int,
        default=None,
        help="peers on BASE+100+N, clients on BASE+200+N (default 7000); 0: free ports, picked for you",
    )
    up.add_argument("--data-dir", default=None, help="default: RUN_DIR/data")
    up.add_argument("--log-dir", default=None, help="default: RUN_DIR/logs")
    up.add_argument("--wait", type=float, default=15.0, help="seconds to wait for a leader")
    up.add_argument("--tls", action="store_true", help="mint a CA and certificates in the run directory and run mutual TLS on both ports")
    up.add_argument(
        "--fresh",
        action="store_true",
        help="write a new cluster config even if the run directory holds one "
        "(the data directory should be empty: its logs name their own members)",
    )
    up.add_argument("--slow", type=_slowness, default=None, help="run every Raft timer N times slower (tick_ms x N), to watch elections")
    up.add_argument(
        "--link-delay", type=int, default=0, metavar="MS", help="hold back every peer message MS ms (slow motion: `heal` keeps it)"
    )
    web = sub.add_parser("web")
    web.add_argument("--listen", default="127.0.0.1:7500", help="HOST:PORT; a non-loopback host needs the token the command prints")
    web.add_argument("--replay", metavar="RUN_DIR|FILE", help="play a recorded run instead of watching the cluster")
    web.add_argument("--config", help="watch the cluster this config describes (no process controls) instead of the run directory's")
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("rolling-restart")
    sub.add_parser("join")
    sub.add_parser("members")
    sub.add_parser("timeline")
    for name in ("kill", "stop", "start", "restart", "pause", "resume", "add", "remove", "partition", "rebuild"):
        sub.add_parser(name).add_argument("id", type=int)
    sub.add_parser("split").add_argument("groups", nargs="+", help="1,2 3,4,5 (or 1,2|3,4,5)")
    slow = sub.add_parser("slow")
    slow.add_argument("src", type=int)
    slow.add_argument("dst", type=int)
    slow.add_argument("ms", type=int)
    sub.add_parser("heal")
    sub.add_parser("transfer").add_argument("id", type=int, nargs="?")
    logs = sub.add_parser("logs")
    logs.add_argument("-f", "--follow", action="store_true", help="then print new lines as the nodes write them (Ctrl-C ends)")
    logs.add_argument("--tail", type=_line_count, metavar="N", help="start from the last N matching lines (default: all; with -f, 10)")
    logs.add_argument("--node", type=int)
    logs.add_argument("--event", type=_event, action="append", help="only these events (repeatable); a name no node logs is refused")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `logs | head` ends quietly
    try:
        return run(Cluster(args.run_dir), args)
    except (ClusterError, ClientError) as e:
        print(f"supervisor: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("supervisor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(cluster: Cluster, args: argparse.Namespace) -> int:
    """Carry out one command; ClusterError (or the client's error) says why it failed."""
    if args.cmd == "up":
        return cmd_up(cluster, args)
    if args.cmd == "status":
        return print_status(cluster, cluster.status_table())
    if args.cmd == "logs":
        return cmd_logs(cluster, args)
    if args.cmd == "timeline":
        return cmd_timeline(cluster)
    if args.cmd == "web":
        from raftproc.ops.web import serve

        return serve(cluster, listen=args.listen, replay=args.replay, config=args.config)
    if args.cmd in ("partition", "split", "slow", "heal"):
        return cmd_links(cluster, args)
    if args.cmd in ("join", "members", "add", "remove", "rebuild"):
        return cmd_membership(cluster, args)
    print(act(cluster, args))
    return EXIT_OK


def act(cluster: Cluster, args: argparse.Namespace) -> str:
    """The commands that change the cluster and say in one line what they did."""
    if args.cmd == "down":
        stopped = cluster.down()
        return f"stopped nodes {stopped}" if stopped else "no node was running"
    if args.cmd == "transfer":
        return f"node {cluster.transfer(args.id)} leads now"
    if args.cmd == "rolling-restart":
        result = cluster.rolling_restart(say=print)
        gaps = ", ".join(f"{g * 1000:.1f} ms" for g in result["handover_gaps_s"]) or "none logged"
        return (
            f"rolling restart of nodes {result['order']} in {result['seconds']:.1f} s; "
            f"leaderless time at each handover (TimeoutNow to new leader): {gaps}"
        )
    if args.cmd == "stop":
        new_leader = cluster.graceful_stop(args.id)
        return f"stop node {args.id}: done" + (f" (node {new_leader} leads now)" if new_leader else "")
    getattr(cluster, args.cmd)(args.id)  # kill, start, restart, pause, resume
    return f"{args.cmd} node {args.id}: done"
