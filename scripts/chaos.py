#!/usr/bin/env python3
"""Run a cluster under faults with concurrent clients, then judge the history.

    python scripts/chaos.py --nodes 5 --duration 60 --faults kill,pause,power,partition,slow \\
        --clients 8 --seed 1 --out runs/NAME

Writes history.jsonl, faults.json, the nodes' logs and report.html to --out, prints
a summary, and exits 0 only when every verdict passes. The same seed gives the same
fault schedule. Partitions and slow links need root (network namespaces); without
it they are skipped with a message and the other faults run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raftproc.ops.chaos import ChaosOptions, check_faults, check_protocol, run_chaos
from raftproc.ops.nemesis import ALL_FAULTS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of workload and faults")
    p.add_argument("--faults", default=",".join(ALL_FAULTS), help=f"comma-separated, from {','.join(ALL_FAULTS)}")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--keys", type=int, help="default: clients / 2, so operations collide")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="default: runs/seed-N")
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=None,
        metavar="N",
        help="snapshot every N entries (default: the node default, 10000); ~100 makes snapshots and InstallSnapshot happen during faults",
    )
    p.add_argument("--tls", action="store_true", help="mutual TLS on every connection, nodes' and clients'")
    p.add_argument(
        "--protocol",
        choices=("native", "redis"),
        default="native",
        help="how the clients talk: raftproc's client protocol, or Redis's through redis-py to the RESP ports",
    )
    p.add_argument("--read-mode", choices=("index", "log", "lease"), default="index", help="how clients read (default: ReadIndex)")
    args = p.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    try:
        check_faults(faults)
        check_protocol(args.protocol, args.read_mode)
    except ValueError as e:
        p.error(str(e))
    out = Path(args.out or f"runs/seed-{args.seed}")
    result = run_chaos(
        ChaosOptions(
            out=out,
            nodes=args.nodes,
            duration=args.duration,
            faults=faults,
            clients=args.clients,
            seed=args.seed,
            keys=args.keys,
            snapshot_every=args.snapshot_every,
            read_mode=args.read_mode,
            tls=args.tls,
            protocol=args.protocol,
        )
    )
    print(result.text(out))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
