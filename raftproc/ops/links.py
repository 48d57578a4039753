"""The link faults a supervisor injects into the nodes it runs: cut a node off, split
the cluster, slow one link, heal (raftproc.runtime.linkfaults has the node's side).

The table of what is cut and slowed lives in RUN_DIR/links.json, so every later
invocation (the command line, the live page) sees the same picture, and a node the
supervisor starts gets its own part in its environment: a node restarted while cut
off stays cut off. A change is sent to every running node at once; a node that does
not answer (paused, say) still has the other end of each cut enforcing it, and gets
its part when it next starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftproc.runtime.linkfaults import ENV, MAX_DELAY_MS, LinkFaults

Link = tuple[int, int]  # (from, to): what `from` sends `to`


@dataclass
class LinkTable:
    cuts: set[Link] = field(default_factory=set)
    delays: dict[Link, int] = field(default_factory=dict)  # ms
    # Every other link's delay: the slow motion `up --link-delay` asks for. It is the
    # network's speed, not a fault, so `heal` leaves it.
    base_ms: int = 0

    @classmethod
    def load(cls, run_dir: Path) -> LinkTable:
        path = run_dir / "links.json"
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls({(a, b) for a, b in raw.get("cuts", [])}, {(a, b): ms for a, b, ms in raw.get("delays", [])}, raw.get("base_ms", 0))

    def save(self, run_dir: Path) -> None:
        path = run_dir / "links.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe()) + "\n")
        tmp.replace(path)

    def describe(self) -> dict[str, Any]:
        """As links.json and the live page's `links` event have it."""
        return {
            "cuts": sorted([a, b] for a, b in self.cuts),
            "delays": sorted([a, b, ms] for (a, b), ms in self.delays.items()),
            "base_ms": self.base_ms,
        }

    def faults_for(self, node: int) -> LinkFaults:
        return LinkFaults(
            drop_to=frozenset(b for a, b in self.cuts if a == node),
            drop_from=frozenset(a for a, b in self.cuts if b == node),
            delay_ms=tuple(sorted((b, ms) for (a, b), ms in self.delays.items() if a == node)),
            base_delay_ms=self.base_ms,
        )

    def env_for(self, node: int) -> dict[str, str]:
        faults = self.faults_for(node)
        return {ENV: json.dumps(faults.to_wire())} if faults.active else {}

    # --- changes ------------------------------------------------------------------

    def cut_off(self, node: int, others: Iterable[int]) -> None:
        """Both ways between `node` and each of `others`."""
        for other in others:
            if other != node:
                self.cuts |= {(node, other), (other, node)}

    def split(self, groups: list[list[int]]) -> None:
        """Both ways between every two nodes in different groups."""
        seen: set[int] = set()
        for g in groups:
            if seen & set(g):
                raise ValueError(f"node {sorted(seen & set(g))[0]} is in two groups")
            seen |= set(g)
        for i, g in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in g:
                    self.cut_off(a, other)

    def slow(self, src: int, dst: int, ms: int) -> None:
        """Hold back what src sends dst by ms; 0 gives the link back the base delay."""
        if src == dst:
            raise ValueError("a link joins two different nodes")
        _check_delay(ms)
        if ms:
            self.delays[(src, dst)] = ms
        else:
            self.delays.pop((src, dst), None)

    def slow_all(self, ms: int) -> None:
        _check_delay(ms)
        self.base_ms = ms

    def heal(self) -> None:
        """Every cut and slowed link whole again; the base delay stays."""
        self.cuts.clear()
        self.delays.clear()


def _check_delay(ms: int) -> None:
    if not 0 <= ms <= MAX_DELAY_MS:
        raise ValueError(f"a delay is 0 to {MAX_DELAY_MS} ms")


def parse_groups(text: str) -> list[list[int]]:
    """`1,2|3,4,5` (or `1,2 / 3,4,5`) -> [[1, 2], [3, 4, 5]]."""
    parts = [p for p in text.replace("/", "|").split("|") if p.strip()]
    try:
        groups = [[int(x) for x in p.replace(" ", ",").split(",") if x.strip()] for p in parts]
    except ValueError:
        raise ValueError(f"groups look like 1,2|3,4,5, not {text[:80]!r}") from None
    if len(groups) < 2 or not all(groups):
        raise ValueError(f"a split needs at least two non-empty groups, like 1,2|3,4,5 (got {text[:80]!r})")
    return groups
