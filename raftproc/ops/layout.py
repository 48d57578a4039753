"""Where a local cluster's nodes listen: loopback addresses on ports a test or a
demo can use, and the config that names them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from raftproc.config import ClusterConfig, NodeAddress


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; they stay free long enough for a test cluster
    to bind them (the kernel does not reuse an ephemeral port at once)."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def local_config(
    nodes: int, data_dir: Path, log_dir: Path, *, ports: list[int] | None = None, base_port: int | None = None, **overrides: Any
) -> ClusterConfig:
    """A cluster on 127.0.0.1. With `base_port` B, node N listens for peers on
    B+100+N, for clients on B+200+N, for metrics scrapes on B+300+N and for Redis
    clients on B+400+N (B=7000 gives the documented defaults); without, on free
    ports the kernel picks. `ports`: peers', then clients', then (optionally)
    metrics' and then Redis ports."""
    if ports is None:
        if base_port is None:
            ports = free_ports(4 * nodes)
        else:
            ports = [base_port + kind * 100 + i for kind in (1, 2, 3, 4) for i in range(1, nodes + 1)]
    addrs = {
        i: NodeAddress(
            i,
            ("127.0.0.1", ports[i - 1]),
            ("127.0.0.1", ports[nodes + i - 1]),
            metrics=("127.0.0.1", ports[2 * nodes + i - 1]) if len(ports) >= 3 * nodes else None,
            redis=("127.0.0.1", ports[3 * nodes + i - 1]) if len(ports) >= 4 * nodes else None,
        )
        for i in range(1, nodes + 1)
    }
    return ClusterConfig(nodes=addrs, data_dir=data_dir.resolve(), log_dir=log_dir.resolve(), **overrides)
