"""Injected link faults: which peers a node's messages are lost to or from, and how
long its messages to each peer are held back.

They exist so that people can watch Raft under a partition or a slow network on any
machine (`supervisor.py partition|split|slow`, the live page), without root or a
kernel with netem. A node takes them only when its config says `link_faults = true`
(clusters the supervisor creates do); from an admin over the client port
(`{"t": "links", ...}`), or at start from the RAFTPROC_LINK_FAULTS environment
variable (JSON of the same shape), so a node restarted while cut off stays cut off.

A cut from A to B is enforced at both ends: A drops what it sends B, and B drops
what arrives from A. Restarting either one alone therefore never heals it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_PEERS = 1024  # entries in each list: more is a hostile request, not a cluster
MAX_DELAY_MS = 60_000
ENV = "RAFTPROC_LINK_FAULTS"


class LinkFaultsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LinkFaults:
    drop_to: frozenset[int] = frozenset()  # what this node sends these peers is lost
    drop_from: frozenset[int] = frozenset()  # what these peers send this node is lost
    delay_ms: tuple[tuple[int, int], ...] = ()  # (peer, ms): sends to peer are held back, sorted
    base_delay_ms: int = 0  # sends to every peer not in delay_ms are held back this long

    @property
    def active(self) -> bool:
        return bool(self.drop_to or self.drop_from or self.delay_ms or self.base_delay_ms)

    def to_wire(self) -> dict[str, Any]:
        return {
            "drop_to": sorted(self.drop_to),
            "drop_from": sorted(self.drop_from),
            "delay_ms": [list(p) for p in self.delay_ms],
            "base_delay_ms": self.base_delay_ms,
        }

    def describe(self) -> dict[str, Any]:
        """As the event stream shows it (JSON object keys are strings)."""
        return {
            "drop_to": sorted(self.drop_to),
            "drop_from": sorted(self.drop_from),
            "delay_ms": {str(p): ms for p, ms in self.delay_ms},
            "base_delay_ms": self.base_delay_ms,
        }


NO_FAULTS = LinkFaults()


def parse_link_faults(body: dict[str, Any]) -> LinkFaults:
    """Check a decoded body (CBOR from the network, or JSON from the environment):
    node ids are integers from 1 to 2^63-1, at most MAX_PEERS of each, delays
    from 0 to MAX_DELAY_MS. A peer's own delay (0 included) overrides the base one."""
    drop_to = _ids(body.get("drop_to", []), "drop_to")
    drop_from = _ids(body.get("drop_from", []), "drop_from")
    pairs = body.get("delay_ms", [])
    if not isinstance(pairs, list) or len(pairs) > MAX_PEERS:
        raise LinkFaultsError(f"delay_ms must be a list of at most {MAX_PEERS} [peer, ms] pairs")
    base = body.get("base_delay_ms", 0)
    if type(base) is not int or not 0 <= base <= MAX_DELAY_MS:
        raise LinkFaultsError(f"base_delay_ms is from 0 to {MAX_DELAY_MS}")
    delays: dict[int, int] = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and _is_id(pair[0]) and type(pair[1]) is int and 0 <= pair[1] <= MAX_DELAY_MS):
            raise LinkFaultsError(f"each delay is [peer, ms] with ms from 0 to {MAX_DELAY_MS}")
        delays[pair[0]] = pair[1]
    return LinkFaults(drop_to, drop_from, tuple(sorted(delays.items())), base)


def _is_id(value: Any) -> bool:
    return type(value) is int and 1 <= value < 2**63


def _ids(value: Any, what: str) -> frozenset[int]:
    if not isinstance(value, list) or len(value) > MAX_PEERS or not all(_is_id(v) for v in value):
        raise LinkFaultsError(f"{what} must be a list of at most {MAX_PEERS} node ids")
    return frozenset(value)
