#!/usr/bin/env python3
"""Benchmark raftproc, side by side with its peers, in one invocation.

    python scripts/bench.py                                  # 3 nodes, 1/16/128/512 in flight
    python scripts/bench.py --compare pysyncobj,etcd --repeats 3
    python scripts/bench.py --failover 15                    # kill -9 of the leader, 15 rounds
    python scripts/bench.py --baseline ../other-checkout     # A/B against another commit
    python scripts/bench.py --tls                            # also with mutual TLS, interleaved: its cost
    python scripts/bench.py --nodes 3,5,7 --value-size 64,1024,16384
    python scripts/bench.py --half-load --large               # open loop at half of peak; 16 KiB and 1 MiB values
    python scripts/bench.py --tiny                           # seconds; CI runs this so it cannot rot
    python scripts/bench.py --reads                          # gets: through the log, ReadIndex, lease
    python scripts/bench.py --snapshots                      # restart and InstallSnapshot catch-up
                                                             # with 1M keys; disk after 5M writes

Each point is measured --repeats times (systems interleaved, so machine noise hits
all alike) over --window seconds after --warmup; the table shows medians with
min-max. Results go to --out (JSON) and --plot (SVG or PNG by suffix: throughput against p99 latency).
PySyncObj is installed into its own virtualenv (.bench/pysyncobj), never into
raftproc's; etcd is Debian's etcd-server, installed when running as root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from raftproc.ops.bench import (
    EtcdTarget,
    Point,
    PySyncObjTarget,
    RaftprocTarget,
    failover,
    fdatasync_ms,
    measure,
    read_bench,
    snapshot_bench,
)
from raftproc.ops.benchplot import write_plot

ROOT = Path(__file__).resolve().parents[1]
# --large: (in flight, value bytes, keys). Fewer keys for 1 MiB keeps each node's
# store (and every snapshot of it) near 64 MiB.
LARGE = [(128, 16384, 1000), (16, 1048576, 64)]


def pysyncobj_python() -> str:
    venv = ROOT / ".bench" / "pysyncobj"
    python = venv / "bin" / "python"
    if not python.exists():
        print("installing PySyncObj 0.3.17 into .bench/pysyncobj ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "pysyncobj==0.3.17", "cbor2"], check=True)
    return str(python)


def etcd_binary() -> str | None:
    found = shutil.which("etcd")
    if found:
        return found
    if os.geteuid() != 0:
        print("etcd skipped: not installed, and installing Debian's etcd-server needs root")
        return None
    print("installing Debian's etcd-server ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], env=env, check=False, capture_output=True)
    return shutil.which("etcd")


def make_targets(systems: list[str], nodes: int, baseline: str | None = None):
    makers = {"raftproc": lambda: RaftprocTarget(nodes)}
    if baseline:
        makers["raftproc-baseline"] = lambda: RaftprocTarget(nodes, source=Path(baseline).resolve())
    if "raftproc-tls" in systems:
        makers["raftproc-tls"] = lambda: RaftprocTarget(nodes, tls=True)
    if "raftproc-bgsync" in systems:
        makers["raftproc-bgsync"] = lambda: RaftprocTarget(nodes, background_sync=True)
    if "pysyncobj" in systems:
        python = pysyncobj_python()
        makers["pysyncobj"] = lambda: PySyncObjTarget(nodes, python)
    if "etcd" in systems:
        binary = etcd_binary()
        if binary:
            makers["etcd"] = lambda: EtcdTarget(nodes, binary)
    return makers


def fmt(p: Point, key: str, digits: int = 1) -> str:
    lo, hi = p.span(key)
    return f"{p.median(key):.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def snapshot_figures(args) -> int:
    repeats = 1 if args.tiny else args.repeats
    result = snapshot_bench(
        keys=args.snapshot_keys,
        churn_writes=args.churn_writes,
        churn_keys=args.churn_keys,
        repeats=repeats,
        say=lambda m: print(m, flush=True),
    )
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    print()
    print(
        f"  restart with {args.snapshot_keys:,} keys (median of {repeats}): answering {med(result['restart'], 'answering_s'):.2f} s, "
        f"caught up {med(result['restart'], 'caught_up_s'):.2f} s, peak RSS {med(result['restart'], 'peak_rss_mb'):.0f} MB"
    )
    print(
        f"  catch-up after missing {args.snapshot_keys:,} writes (median of {repeats}): {med(result['catch_up'], 'caught_up_s'):.2f} s, "
        f"peak RSS follower {med(result['catch_up'], 'peak_rss_mb'):.0f} MB, leader {med(result['catch_up'], 'leader_peak_rss_mb'):.0f} MB"
    )
    for row in result["disk"]:
        print(
            f"  after {row['writes']:>10,} writes to {args.churn_keys:,} keys: {row['max_node_disk_mb']:7.1f} MB on disk per node, "
            f"{row['max_log_entries']:>7,} log entries in memory, RSS {row['max_rss_mb']:.0f} MB, {row['ops_per_s']:,.0f} ops/s"
        )
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n  results: {args.out}")
    return 0


def read_figures(args, inflights: list[int]) -> int:
    rows = read_bench(
        inflights=inflights,
        repeats=args.repeats,
        warmup=args.warmup,
        window=args.window,
        generators=args.generators,
        say=lambda m: print(m, flush=True),
    )
    print()
    print(f"  {'read':<6} {'in flight':>9} {'ops/s':>9} {'p50 ms':>7} {'p99 ms':>7}   (median of {args.repeats})")
    by = {(r["read"], r["inflight"]): r["median"] for r in rows}
    for inflight in inflights:
        for mode in ("log", "index", "lease"):
            m = by[(mode, inflight)]
            print(f"  {mode:<6} {inflight:>9} {m['ops_per_s']:>9.0f} {m['p50_ms']:>7.2f} {m['p99_ms']:>7.2f}")
        ratio = by[("index", inflight)]["ops_per_s"] / by[("log", inflight)]["ops_per_s"]
        print(f"  ReadIndex / log at {inflight} in flight: {ratio:.2f}x")
    Path(args.out).write_text(
        json.dumps({"reads": rows, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}, indent=1)
    )
    print(f"\n  results: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--nodes", default="3", help="cluster sizes, comma-separated")
    a.add_argument("--inflight", default="1,16,128,512")
    a.add_argument("--value-size", default="64")
    a.add_argument("--keys", default="1000")
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--warmup", type=float, default=1.0)
    a.add_argument("--window", type=float, default=3.0)
    a.add_argument("--generators", type=int, default=2, help="load generator processes (1 when one request is in flight)")
    a.add_argument("--compare", default="", help="peers to run too: pysyncobj,etcd (or raftproc-bgsync: fsync on a thread)")
    a.add_argument("--baseline", help="also run raftproc from this checkout (another commit), interleaved: an A/B in one invocation")
    a.add_argument(
        "--tls", action="store_true", help="also run raftproc with mutual TLS on every connection, interleaved (the cost of TLS)"
    )
    a.add_argument("--failover", type=int, default=0, help="rounds of kill -9 of the leader")
    a.add_argument("--half-load", action="store_true", help="also measure raftproc open-loop at half its peak throughput")
    a.add_argument("--large", action="store_true", help="also raftproc with large values: 16 KiB at 128 in flight, 1 MiB at 16 in flight")
    a.add_argument("--tiny", action="store_true", help="one short point, for CI")
    a.add_argument("--reads", action="store_true", help="only reads: log vs ReadIndex vs lease, at each --inflight")
    a.add_argument(
        "--snapshots",
        action="store_true",
        help="only the snapshot figures: restart and catch-up with --snapshot-keys keys, disk after --churn-writes writes",
    )
    a.add_argument("--snapshot-keys", type=int, default=1_000_000)
    a.add_argument("--churn-writes", type=int, default=5_000_000)
    a.add_argument("--churn-keys", type=int, default=10_000)
    a.add_argument("--out", default="bench.json")
    a.add_argument("--plot", default="bench.svg")
    args = a.parse_args(argv)
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    if args.snapshots:
        return snapshot_figures(args)
    if args.reads:
        return read_figures(args, ints(args.inflight))
    if args.tiny:
        args.inflight, args.repeats, args.warmup, args.window = "16", 1, 0.3, 1.0
    systems = ["raftproc"] + (["raftproc-baseline"] if args.baseline else []) + (["raftproc-tls"] if args.tls else [])
    systems += [s for s in args.compare.split(",") if s and s not in systems]
    unknown = set(systems) - {"raftproc", "raftproc-baseline", "raftproc-tls", "raftproc-bgsync", "pysyncobj", "etcd"}
    if unknown:
        a.error(f"unknown systems {sorted(unknown)}")

    results: list[Point] = []
    failovers: list[float] = []
    fsyncs: list[float] = []  # fdatasync p50 in ms, one per round
    for nodes in ints(args.nodes):
        makers = make_targets(systems, nodes, args.baseline)
        points = {
            (s, inflight, size, keys): Point(s, nodes, inflight, size, keys)
            for s in makers
            for inflight in ints(args.inflight)
            for size in ints(args.value_size)
            for keys in ints(args.keys)
        }
        if args.large:
            for s in makers:
                if s.startswith("raftproc"):
                    points.update({(s, inflight, size, keys): Point(s, nodes, inflight, size, keys) for inflight, size, keys in LARGE})
        for _ in range(args.repeats):
            # The disk's own cost, measured where the clusters keep their data, in each round.
            fsyncs.append(statistics.median(fdatasync_ms(Path(tempfile.gettempdir()))))
            for system, make in makers.items():
                target = make()
                try:
                    for (s, inflight, size, _keys), point in points.items():
                        if s == system:
                            gens = 1 if inflight == 1 else args.generators
                            measure(target, point, warmup=args.warmup, window=args.window, generators=gens)
                            print(
                                f"  {system:<17} n={nodes} inflight={inflight:<4} value={size:<5} {point.runs[-1]['ops_per_s']:>9.0f} ops/s  p99 {point.runs[-1]['p99_ms']:.2f} ms",
                                flush=True,
                            )
                finally:
                    target.close()
        results += points.values()
        if args.half_load:
            # Each raftproc build at half of its own closed-loop peak, interleaved.
            halves = {}
            for s in makers:
                if s.startswith("raftproc"):
                    peak = max(p.median("ops_per_s") for p in points.values() if p.system == s and p.value_size == ints(args.value_size)[0])
                    halves[s] = Point(s, nodes, 4096, ints(args.value_size)[0], ints(args.keys)[0], rate=round(peak / 2))
            for _ in range(args.repeats):
                for s, half in halves.items():
                    target = makers[s]()
                    try:
                        measure(target, half, warmup=args.warmup, window=args.window, generators=args.generators)
                    finally:
                        target.close()
            for s, half in halves.items():
                print(f"  {s} n={nodes} open loop at half of peak ({half.rate:.0f} ops/s): p99 {half.median('p99_ms'):.2f} ms", flush=True)
                results.append(half)
        if args.failover and nodes == ints(args.nodes)[0]:
            target = RaftprocTarget(nodes)
            try:
                failovers = failover(target, args.failover)
            finally:
                target.close()

    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"window {args.window}s after {args.warmup}s warm-up, {args.repeats} runs, median [min-max]"
    )
    print(
        f"{'system':<18}{'nodes':>5}{'load':>9}{'value':>8}{'keys':>6}  {'ops/s':<24}{'p50 ms':<20}{'p99 ms':<20}{'p999 ms':<20}{'node us/op':<20}{'gen cpu s':<10}{'RSS MB':>7}{'leader chg':>11}"
    )
    for p in results:
        load = f"{p.rate:.0f}/s" if p.rate else str(p.inflight)
        print(
            f"{p.system:<18}{p.nodes:>5}{load:>9}{p.value_size:>8}{p.keys:>6}  {fmt(p, 'ops_per_s', 0):<24}{fmt(p, 'p50_ms', 2):<20}{fmt(p, 'p99_ms', 2):<20}"
            f"{fmt(p, 'p999_ms', 2):<20}{fmt(p, 'node_cpu_us_per_op', 0):<20}{p.median('loadgen_cpu_s'):<10.2f}{max(r['rss_mb'] for r in p.runs):>7.1f}{p.median('leader_changes'):>11.0f}"
        )
    print()
    for p in results:
        if p.value_size >= 16384 and not p.rate:
            print(
                f"{p.system} {p.nodes} nodes, {p.value_size // 1024} KiB values, {p.inflight} in flight: "
                f"{p.median('ops_per_s'):,.0f} ops/s = {p.median('ops_per_s') * p.value_size / 2**20:,.1f} MiB/s of values, p99 {p.median('p99_ms'):.1f} ms"
            )
    if fsyncs:
        floor = statistics.median(fsyncs)
        print(
            f"fdatasync p50 of the data directory's disk (append {len(fsyncs)} x 300 records of 128 B): median {floor:.3f} ms "
            f"[{min(fsyncs):.3f}-{max(fsyncs):.3f}]"
        )
        for p in results:
            if p.system == "raftproc" and p.inflight == 1 and not p.rate and p.value_size == 64:
                print(f"raftproc p50 at 1 in flight: {p.median('p50_ms'):.3f} ms = {p.median('p50_ms') / floor:.1f}x the fdatasync p50")
    for p in results:
        if p.system == "raftproc" and p.value_size == 64 and not p.rate:
            print(
                f"raftproc node CPU per committed write at {p.inflight} in flight: {p.median('node_cpu_us_per_op'):,.0f} us "
                f"[{p.span('node_cpu_us_per_op')[0]:,.0f}-{p.span('node_cpu_us_per_op')[1]:,.0f}]"
            )
    best = {s: max((p.median("ops_per_s") for p in results if p.system == s), default=0) for s in systems}
    for s in systems[1:]:
        if best.get(s):
            print(f"peak throughput raftproc / {s}: {best['raftproc'] / best[s]:.2f}x ({best['raftproc']:.0f} vs {best[s]:.0f} ops/s)")
    if failovers:
        print(
            f"failover (kill -9 of the leader until a write commits), {len(failovers)} rounds: "
            f"median {statistics.median(failovers) * 1000:.0f} ms, max {max(failovers) * 1000:.0f} ms"
        )
    Path(args.out).write_text(
        json.dumps(
            {"points": [p.as_dict() for p in results], "failover_s": failovers, "fdatasync_p50_ms": fsyncs, "command": " ".join(sys.argv)},
            indent=1,
        )
    )
    if write_plot(Path(args.plot), results):
        print(f"wrote {args.out} and {args.plot}")
    else:
        print(f"wrote {args.out}; no plot: matplotlib is not installed (pip install 'raftproc[plots]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
