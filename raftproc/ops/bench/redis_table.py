"""What `--compare redis` prints and writes: its table (medians with min-max, as
output.py prints raftproc's own rows), the ratios of raftproc over RESP to Redis
durable and in memory, and the failed runs, loudly."""

from __future__ import annotations

import math
from typing import Any

from raftproc.ops.bench.redis import RespPoint, all_failures

RAFTPROC = "raftproc-resp"
PEERS = ("redis-durable", "redis-memory")


def print_resp_table(points: list[RespPoint], *, warmup: float, window: float, repeats: int) -> None:
    print()
    print(
        f"redis-benchmark (Debian's redis-tools) against each, {repeats} runs, median [min-max]; each run: a probe, "
        f"{warmup}s warm-up, then about {window}s of requests; ops = requests (an MSET of 10 keys is one)"
    )
    print(
        f"{'system':<24}{'test':<6}{'c x P':>8}{'value':>7}{'keys':>6}  {'ops/s':<34}{'p50 ms':<24}{'p99 ms':<26}"
        f"{'server us/op':<20}{'failed':>7}"
    )
    for p in points:
        print(
            f"{p.system:<24}{p.test:<6}{f'{p.clients}x{p.pipeline}':>8}{p.value_size:>7}{p.keys:>6}  {p.shown('ops_per_s', 0, grouped=True):<34}"
            f"{p.shown('p50_ms', 3, grouped=True):<24}{p.shown('p99_ms', 3, grouped=True):<26}{p.shown('node_cpu_us_per_op', 0, grouped=True):<20}"
            f"{len(p.failures()):>4}/{len(p.runs)}"
        )
    print()


def resp_ratios(points: list[RespPoint]) -> list[dict[str, Any]]:
    """For each test and load: every system's median ops/s and p99, and raftproc's
    throughput over each Redis's (NaN where a side has no successful run)."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for p in points:
        row = rows.setdefault((p.test, p.inflight), {"test": p.test, "inflight": p.inflight, "ops_per_s": {}, "p99_ms": {}})
        row["ops_per_s"][p.system] = p.median("ops_per_s")
        row["p99_ms"][p.system] = p.median("p99_ms")
    for row in rows.values():
        ours = row["ops_per_s"].get(RAFTPROC, math.nan)
        for peer in PEERS:
            row[f"raftproc/{peer}"] = ours / row["ops_per_s"].get(peer, math.nan)
    return list(rows.values())


def _ratio(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}x"


def print_resp_ratios(points: list[RespPoint]) -> None:
    for row in resp_ratios(points):
        ops, p99 = row["ops_per_s"], row["p99_ms"]
        figures = ", ".join(f"{s} failed" if math.isnan(ops[s]) else f"{s} {ops[s]:,.0f} ops/s p99 {p99[s]:.3f} ms" for s in ops)
        ratios = "  ".join(f"raftproc/{peer} {_ratio(row[f'raftproc/{peer}'])}" for peer in PEERS)
        print(f"{row['test']} at {row['inflight']} in flight: {ratios}   ({figures})")


def print_resp_failures(points: list[RespPoint]) -> bool:
    """Every failed run, where nobody can miss it; whether there was one."""
    failures = list(all_failures(points))
    if failures:
        print()
        print(f"!!! {len(failures)} redis-benchmark run(s) FAILED: their figures are left out of the medians above")
        for line in failures:
            print(f"!!! {line}")
    return bool(failures)
