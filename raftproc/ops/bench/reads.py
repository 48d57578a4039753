"""Gets three ways on one three-node cluster, interleaved so machine noise hits all
alike: through the log, by ReadIndex, and by lease."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raftproc.ops.bench.loadgens import Load, run_loadgens, write_load
from raftproc.ops.bench.output import machine, write_json
from raftproc.ops.bench.points import combine
from raftproc.ops.bench.targets import RaftprocTarget

READ_MODES = ("log", "index", "lease")


def read_bench(
    *, inflights: list[int], repeats: int, warmup: float, window: float, generators: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Each (read mode, requests in flight) with its runs and their medians."""
    target = RaftprocTarget(3)
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        write_load(target.cluster, 2000, unique=False, keys=1000)
        for _ in range(repeats):
            for inflight in inflights:
                for mode in READ_MODES:
                    load = Load(inflight, 1 if inflight == 1 else generators, warmup, window, read=mode)
                    run = combine(run_loadgens(target.leader_address(), load))
                    rows.setdefault((mode, inflight), []).append(run)
                    say(
                        f"  read={mode:<5} inflight={inflight:<4} {run['ops_per_s']:>9.0f} ops/s  "
                        f"p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms"
                    )
    finally:
        target.close()
    return [
        {
            "read": mode,
            "inflight": inflight,
            "runs": runs,
            "median": {k: statistics.median(r[k] for r in runs) for k in ("ops_per_s", "p50_ms", "p99_ms")},
        }
        for (mode, inflight), runs in rows.items()
    ]


def read_figures(*, inflights: list[int], repeats: int, warmup: float, window: float, generators: int, out: Path) -> None:
    """Measure, print the medians and ReadIndex against the log, write the JSON to `out`."""
    rows = read_bench(
        inflights=inflights, repeats=repeats, warmup=warmup, window=window, generators=generators, say=lambda m: print(m, flush=True)
    )
    print()
    print(f"  {'read':<6} {'in flight':>9} {'ops/s':>9} {'p50 ms':>7} {'p99 ms':>7}   (median of {repeats})")
    by = {(r["read"], r["inflight"]): r["median"] for r in rows}
    for inflight in inflights:
        for mode in READ_MODES:
            m = by[(mode, inflight)]
            print(f"  {mode:<6} {inflight:>9} {m['ops_per_s']:>9.0f} {m['p50_ms']:>7.2f} {m['p99_ms']:>7.2f}")
        ratio = by[("index", inflight)]["ops_per_s"] / by[("log", inflight)]["ops_per_s"]
        print(f"  ReadIndex / log at {inflight} in flight: {ratio:.2f}x")
    write_json(out, {"reads": rows, "machine": machine()})
    print(f"\n  results: {out}")
