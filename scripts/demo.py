#!/usr/bin/env python3
"""Start a local 5-node cluster through the supervisor and show Raft at work:
three writes, a SIGKILL of the leader, a new leader, and every node applying
the same log (the killed node too, once restarted); then one traced write,
SET x=10, told step by step from the nodes' own logs (the election that made
the leader, append, replicate, acknowledge, commit, apply). The cluster keeps
running afterwards; the last lines say how to look at it and how to stop it.

With --web it starts the cluster in slow motion instead (every Raft timer ten times
slower, every peer message held back 100 ms, so an election can be watched) and
serves the live page until Ctrl-C: `supervisor.py up --slow 10 --link-delay 100`,
then `supervisor.py web`."""

from __future__ import annotations

import argparse
import sys

from raftproc.ops.cluster import ClusterError
from raftproc.ops.demo import slow_motion, tour


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--web", action="store_true", help="start the cluster in slow motion and serve the live page")
    args.add_argument("--slow", type=int, default=10, help="with --web: Raft timers this many times slower")
    args.add_argument("--link-delay", type=int, default=100, metavar="MS", help="with --web: every peer message held back this long")
    opts = args.parse_args()
    if opts.web:
        return slow_motion(opts.slow, opts.link_delay)
    tour()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ClusterError as e:
        print(f"demo: {e}", file=sys.stderr)
        sys.exit(1)
