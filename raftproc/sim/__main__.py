"""Replay one simulated run, or sweep many.

python -m raftproc.sim --seed 7                  # one run, full trace
python -m raftproc.sim --seed 7 --nodes 3 --steps 500
python -m raftproc.sim --seeds 1000 --steps 2000  # sweep seeds 0..999 over 3, 5, 7 nodes
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from raftproc.sim.cluster import (
    LivenessViolation,
    SafetyViolation,
    SimConfig,
    Simulation,
)
from raftproc.sim.sweep import sweep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raftproc.sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, help="replay this one seed with a trace")
    p.add_argument("--nodes", type=int, default=5, choices=(1, 2, 3, 4, 5, 6, 7, 8, 9))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", type=int, help="sweep seeds 0..N-1 over 3, 5 and 7 nodes")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="sweep processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="one run: print only the summary")
    args = p.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the trace quietly
    if args.seeds is not None:
        started = time.monotonic()
        failures = sweep(range(args.first_seed, args.first_seed + args.seeds), steps=args.steps, workers=args.workers or None)
        took = time.monotonic() - started
        for f in failures:
            print(f, file=sys.stderr)
        print(f"{args.seeds} seeds x {args.steps} steps over 3, 5, 7 nodes: {len(failures)} failed in {took:.1f}s")
        return 1 if failures else 0
    if args.seed is None:
        p.error("give --seed N (one run) or --seeds N (a sweep)")
    cfg = SimConfig(nodes=args.nodes, steps=args.steps)
    trace = None if args.quiet else print
    try:
        stats = Simulation(args.seed, cfg, trace=trace).run()
    except (SafetyViolation, LivenessViolation) as e:
        print(f"VIOLATION {type(e).__name__}: {e}")
        return 1
    print(
        f"seed {stats.seed}: {stats.nodes} nodes, {stats.steps} steps, {stats.leaders_elected} leaders "
        f"(max term {stats.max_term}), {stats.committed} entries committed of {stats.proposals} proposals, "
        f"{stats.crashes} crashes, {stats.partitions} partitions, {stats.messages_sent} messages "
        f"({stats.messages_dropped} dropped): every property held"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
