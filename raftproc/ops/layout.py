"""Where a local cluster's nodes listen: loopback addresses on ports a test or a
demo can use, and the config that names them."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from raftproc.config import ClusterConfig, NodeAddress

# Listeners' ports come from outside the kernel's ephemeral range (Linux's default is
# 32768-60999): a port from that range can be taken, while its node is down, as the
# source port of any outgoing connection (a peer reconnecting to another node), and
# the node then cannot listen on it again when it restarts.
LISTEN_PORTS = (20000, 32768)
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_ports(count: int) -> list[int]:
    """Ports a local cluster can listen on: free now, outside the range the kernel
    picks source ports from, and handed out in turn by a counter every process of
    this user shares (a file in a private directory under the temp directory, locked
    while it is read and moved on), so that clusters started side by side (tests
    run in parallel) never get the same port. After about 12,000 ports the counter
    wraps around; a port still in use is skipped."""
    lo, hi = listen_range()
    counter = _counter_file()
    if hi - lo < 4 * count or counter is None:
        return _kernel_picked(count)
    with open(counter, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        port = int(text) if text.isdecimal() and lo <= int(text) < hi else random.randrange(lo, hi)
        ports: list[int] = []
        for _ in range(hi - lo):
            if len(ports) == count:
                break
            if _bindable(port):
                ports.append(port)
            port = port + 1 if port + 1 < hi else lo
        f.seek(0)
        f.truncate()
        f.write(str(port))
    if len(ports) < count:
        raise OSError(f"no {count} free ports in {lo}-{hi - 1}")
    return ports


def listen_range() -> tuple[int, int]:
    """LISTEN_PORTS, or where the kernel's ephemeral range overlaps it, the larger
    part of it outside that range, or failing that the ports above that range."""
    lo, hi = LISTEN_PORTS
    try:
        first, last = (int(n) for n in _EPHEMERAL_RANGE.read_text().split()[:2])
    except (OSError, ValueError):
        return lo, hi
    if last < lo or first >= hi:
        return lo, hi
    below, above = (lo, min(hi, first)), (max(lo, last + 1), hi)
    best = max(below, above, key=lambda r: r[1] - r[0])
    return best if best[1] - best[0] >= 1000 else (last + 1, 65536)


def _counter_file() -> Path | None:
    """The counter, in a directory only this user can write (None if one exists that
    is not ours: then the kernel picks)."""
    directory = Path(tempfile.gettempdir()) / f"raftproc-{os.getuid()}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(directory)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return directory / "ports"


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_picked(count: int) -> list[int]:
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
    ports (free_ports). `ports`: peers', then clients', then (optionally)
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
