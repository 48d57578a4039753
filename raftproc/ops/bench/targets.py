"""A cluster under test, as a measurement sees it: where its leader takes client
requests, its processes (for CPU and memory), a count that grows with each leader
change, and how to stop it. raftproc's own here; etcd and PySyncObj in
other_systems.py."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

import psutil

from raftproc.build import PURE_ENV
from raftproc.config import Address
from raftproc.ops.cluster import Cluster
from raftproc.ops.layout import free_ports, local_config


class Target(Protocol):
    @property
    def system(self) -> str: ...  # its name in the table and the JSON
    @property
    def protocol(self) -> str: ...  # what the load generators speak to it: raftproc | etcd
    @property
    def config(self) -> Path | None: ...  # a config the load generators read their TLS client certificate from
    def leader_address(self) -> Address: ...
    def node_pids(self) -> list[int]: ...
    def leader_changes_marker(self) -> int: ...  # grows by one (at least) with each new leader
    def close(self) -> None: ...


def largest_rss_mb(pids: list[int]) -> float:
    """The resident memory of the largest of these processes, in MiB (0 without any)."""
    sizes = []
    for pid in pids:
        try:
            sizes.append(psutil.Process(pid).memory_info().rss / 2**20)
        except psutil.Error:
            continue  # it exited meanwhile
    return max(sizes, default=0.0)


class RaftprocTarget:
    """A raftproc cluster in a temporary directory."""

    protocol = "raftproc"

    def __init__(
        self, nodes: int, *, background_sync: bool = False, source: Path | None = None, tls: bool = False, pure: bool = False
    ) -> None:
        """`source`: run the nodes from another checkout of raftproc (a baseline for an
        A/B measured in one invocation). `tls`: mutual TLS on every connection, the
        load generators' too. `pure`: this checkout's pure-Python build, where
        `raftproc` runs whichever build the checkout has (compiled when
        scripts/compile.py has compiled it)."""
        self.system = "raftproc"
        if background_sync:
            self.system = "raftproc-bgsync"
        if source is not None:
            self.system = "raftproc-baseline"
        if tls:
            self.system = "raftproc-tls"
        if pure:
            self.system = "raftproc-pure"
        self.tmp = Path(tempfile.mkdtemp(prefix="raftproc-bench-"))
        env = {"PYTHONPATH": str(source)} if source is not None else {PURE_ENV: "1" if pure else "0"}
        self.cluster = Cluster(self.tmp / "run", env=env)
        # An older checkout may not know the metrics address: its config leaves it out.
        ports = free_ports(2 * nodes) if source is not None else None
        self.cluster.create(
            local_config(nodes, self.tmp / "data", self.tmp / "logs", ports=ports, log_level="warning", background_sync=background_sync),
            tls=tls,
        )
        self.config = self.cluster.config_path if tls else None
        self.cluster.up(wait=20)
        running = (self.cluster.node_status(1) or {}).get("build")
        if pure and running != "pure":
            self.close()
            raise RuntimeError(f"{PURE_ENV}=1 did not give the pure build (status says {running})")

    def leader_address(self) -> Address:
        leader = self.cluster.wait_for_leader(timeout=20)
        return self.cluster.config.nodes[leader].client

    def node_pids(self) -> list[int]:
        return [p.pid for p in self.cluster.processes() if p.pid and p.state == "running"]

    def leader_changes_marker(self) -> int:
        statuses = [self.cluster.node_status(p.node_id) for p in self.cluster.processes()]
        return max((s["term"] for s in statuses if s), default=0)

    def close(self) -> None:
        self.cluster.down(timeout=3)
