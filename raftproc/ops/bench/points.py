"""A measured point: one system at one cluster size, load and value size, with
every run kept, so reports quote medians with min-max."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

# The figures of a run that a point reports the median of (the JSON's "median").
MEDIANS = ("ops_per_s", "p50_ms", "p99_ms", "p999_ms", "node_cpu_s", "node_cpu_us_per_op", "loadgen_cpu_s", "leader_changes")


@dataclass
class Point:
    system: str
    nodes: int
    inflight: int
    value_size: int
    keys: int
    rate: float = 0.0  # open-loop ops/s in total; 0: closed loop with `inflight` outstanding
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [r[key] for r in self.runs if r.get(key) == r.get(key)]  # drop NaN
        return statistics.median(values) if values else float("nan")

    def span(self, key: str) -> tuple[float, float]:
        values = [r[key] for r in self.runs if r.get(key) == r.get(key)]  # drop NaN
        return (min(values), max(values)) if values else (float("nan"), float("nan"))

    def shown(self, key: str, digits: int = 1, grouped: bool = False) -> str:
        """ "median [min-max]" as the tables print it ("-" with no run to show)."""
        median = self.median(key)
        if median != median:
            return "-"
        lo, hi = self.span(key)
        f = f"{',' if grouped else ''}.{digits}f"
        return f"{median:{f}} [{lo:{f}}-{hi:{f}}]"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["median"] = {k: self.median(k) for k in MEDIANS}
        return d


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum throughput; latency percentiles of the combined load are approximated by
    the worst generator's (each generator sees the same server)."""
    return {
        "ops_per_s": sum(p["ops_per_s"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "p50_ms": max(p["p50_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "p999_ms": max(p["p999_ms"] for p in parts),
        "loadgen_cpu_s": sum(p["cpu_s"] for p in parts),
    }
