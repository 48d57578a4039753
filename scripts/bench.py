#!/usr/bin/env python3
"""Benchmark raftproc, side by side with its peers, in one invocation.

    python scripts/bench.py                                  # 3 nodes, 1/16/128/512 in flight
    python scripts/bench.py --compare pysyncobj,etcd --repeats 3
    python scripts/bench.py --compare raftproc-pure          # the compiled build beside the pure one (RAFTPROC_PURE=1)
    python scripts/bench.py --failover 15                    # kill -9 of the leader, 15 rounds
    python scripts/bench.py --baseline ../other-checkout     # A/B against another commit
    python scripts/bench.py --tls                            # also with mutual TLS, interleaved: its cost
    python scripts/bench.py --nodes 3,5,7 --value-size 64,1024,16384
    python scripts/bench.py --half-load --large               # open loop at half of peak; 16 KiB and 1 MiB values
    python scripts/bench.py --tiny                           # seconds; CI runs this so it cannot rot
    python scripts/bench.py --reads                          # gets: through the log, ReadIndex, lease
    python scripts/bench.py --snapshots                      # restart and InstallSnapshot catch-up
                                                             # with 1M keys; disk after 5M writes
    python scripts/bench.py --compare redis                  # raftproc's RESP port vs redis-server (durable,
                                                             # in memory), all under redis-benchmark

Each point is measured --repeats times (systems interleaved, so machine noise hits
all alike) over --window seconds after --warmup; the table shows medians with
min-max. Results go to --out (JSON) and --plot (SVG or PNG by suffix: throughput against p99 latency).
PySyncObj is installed into its own virtualenv (.bench/pysyncobj), never into
raftproc's; etcd is Debian's etcd-server, installed when running as root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raftproc import build
from raftproc.ops.bench.compare import Comparison, run_comparison, systems_to_run
from raftproc.ops.bench.output import print_headlines, print_table, write_results
from raftproc.ops.bench.reads import read_figures
from raftproc.ops.bench.redis import TESTS
from raftproc.ops.bench.redis_table import print_resp_failures, print_resp_ratios, print_resp_table
from raftproc.ops.bench.snapshots import snapshot_figures
from raftproc.ops.benchplot import write_plot

ROOT = Path(__file__).resolve().parents[1]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def redis_tests(text: str) -> tuple[str, ...]:
    tests = tuple(t for t in text.split(",") if t)
    unknown = set(tests) - set(TESTS)
    if unknown or not tests:
        raise argparse.ArgumentTypeError(f"choose among {','.join(TESTS)}, not {text!r}")
    return tests


def parser() -> argparse.ArgumentParser:
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--nodes", default="3", help="cluster sizes, comma-separated")
    a.add_argument("--inflight", default="1,16,128,512")
    a.add_argument("--value-size", default="64")
    a.add_argument("--keys", default="1000")
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--warmup", type=float, default=1.0)
    a.add_argument("--window", type=float, default=3.0)
    a.add_argument("--generators", type=int, default=2, help="load generator processes (1 when one request is in flight)")
    a.add_argument("--compare", default="", help="peers to run too: pysyncobj,etcd,redis (or raftproc-bgsync: fsync on a thread)")
    a.add_argument(
        "--redis-tests", type=redis_tests, default="set,get", help="with --compare redis: redis-benchmark tests (set,get,incr,mset)"
    )
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
    return a


def main(argv: list[str] | None = None) -> int:
    a = parser()
    args = a.parse_args(argv)
    if args.snapshots:
        snapshot_figures(
            keys=args.snapshot_keys,
            churn_writes=args.churn_writes,
            churn_keys=args.churn_keys,
            repeats=1 if args.tiny else args.repeats,
            out=Path(args.out),
        )
        return 0
    if args.reads:
        read_figures(
            inflights=ints(args.inflight),
            repeats=args.repeats,
            warmup=args.warmup,
            window=args.window,
            generators=args.generators,
            out=Path(args.out),
        )
        return 0
    if args.tiny:
        args.inflight, args.repeats, args.warmup, args.window = "16", 1, 0.3, 1.0
    try:
        systems = systems_to_run(args.compare.split(","), baseline=bool(args.baseline), tls=args.tls)
    except ValueError as e:
        a.error(str(e))
    comparison = Comparison(
        nodes=ints(args.nodes),
        inflights=ints(args.inflight),
        value_sizes=ints(args.value_size),
        keys=ints(args.keys),
        repeats=args.repeats,
        warmup=args.warmup,
        window=args.window,
        generators=args.generators,
        systems=systems,
        venvs=ROOT / ".bench",
        baseline=Path(args.baseline) if args.baseline else None,
        failover_rounds=args.failover,
        half_load=args.half_load,
        large=args.large,
        redis_tests=args.redis_tests,
    )
    print(f"# raftproc runs the {build.BUILD} build ({build.WHY})", flush=True)
    results = run_comparison(comparison)
    print_table(results.points, warmup=args.warmup, window=args.window, repeats=args.repeats)
    print_headlines(results, systems)
    if results.resp_points:
        print_resp_table(results.resp_points, warmup=args.warmup, window=args.window, repeats=args.repeats)
        print_resp_ratios(results.resp_points)
    write_results(Path(args.out), results, command=" ".join(sys.argv))
    if write_plot(Path(args.plot), results.points):
        print(f"wrote {args.out} and {args.plot}")
    else:
        print(f"wrote {args.out}; no plot: matplotlib is not installed (pip install 'raftproc[plots]')")
    # A failed redis-benchmark run is a failed bench, though every other figure is kept.
    return 1 if print_resp_failures(results.resp_points) else 0


if __name__ == "__main__":
    sys.exit(main())
