"""Test hosts in Linux network namespaces: one per node, joined by veth to a bridge.

Node N lives in namespace `rp<tag>n<N>` with address 10.213.<tag>.N on its eth0;
the bridge in the root namespace holds 10.213.<tag>.254, so clients and the
supervisor reach every node. Faults are made outside the node code:

- cut(a, b): a blackhole route in a's namespace, so nothing a sends reaches b
  (b's packets still reach a: an asymmetric cut; cut both ways for a partition);
- slow(n): tc netem delay, jitter and loss on n's eth0 (a tbf rate limit where
  the kernel has no netem).

Needs root (CI runs as root). `available()` says whether this machine allows it.
Every namespace, veth and the bridge are removed by `teardown()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


class NetnsError(Exception):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if not shutil.which("ip") or not shutil.which("tc"):
        return False, "the ip and tc commands (iproute2) are missing"
    probe = f"rpprobe{os.getpid() % 100000}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return False, "this kernel or sandbox does not allow network namespaces"
    _ip("netns", "del", probe, check=False)
    return True, "ok"


class NetnsLab:
    def __init__(self, nodes: int, tag: int | None = None) -> None:
        self.nodes = list(range(1, nodes + 1))
        self.tag = (os.getpid() % 250) + 1 if tag is None else tag
        self.bridge = f"rpb{self.tag}"
        self.cuts: set[tuple[int, int]] = set()
        self.slowed: set[int] = set()

    def ns(self, n: int) -> str:
        return f"rp{self.tag}n{n}"

    def addr(self, n: int) -> str:
        return f"10.213.{self.tag}.{n}"

    def launcher(self) -> list[str]:
        """Run a node inside its namespace ({id} is filled in per node)."""
        return ["ip", "netns", "exec", f"rp{self.tag}n{{id}}", sys.executable, "-m", "raftproc.node"]

    def setup(self) -> None:
        self.teardown()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"10.213.{self.tag}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n in self.nodes:
            ns, outside, inside = self.ns(n), f"rpv{self.tag}n{n}", f"rpi{self.tag}n{n}"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("-n", ns, "link", "set", inside, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.addr(n)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")

    def teardown(self) -> None:
        for n in self.nodes:
            _ip("netns", "del", self.ns(n), check=False)
            _ip("link", "del", f"rpv{self.tag}n{n}", check=False)
        _ip("link", "del", self.bridge, check=False)
        self.cuts.clear()
        self.slowed.clear()

    def cut(self, src: int, dst: int) -> None:
        """Packets from src to dst vanish (src's sends; dst's sends still arrive)."""
        if (src, dst) not in self.cuts:
            _ip("-n", self.ns(src), "route", "add", "blackhole", f"{self.addr(dst)}/32")
            self.cuts.add((src, dst))

    def heal_cuts(self) -> None:
        for src, dst in list(self.cuts):
            _ip("-n", self.ns(src), "route", "del", "blackhole", f"{self.addr(dst)}/32", check=False)
        self.cuts.clear()

    def slow(self, n: int, delay_ms: int = 40, jitter_ms: int = 20, loss_pct: float = 2.0) -> str:
        """Delay, jitter and loss with netem. Kernels built without netem (seen here)
        get a token-bucket rate limit instead: a slow, queueing link, without loss.
        Returns which was applied."""
        self.heal_slow_node(n)
        shapes = (
            ("netem", ["netem", "delay", f"{delay_ms}ms", f"{jitter_ms}ms", "loss", f"{loss_pct}%"]),
            ("tbf", ["tbf", "rate", "256kbit", "burst", "16kbit", "latency", "300ms"]),
        )
        errors = []
        for name, qdisc in shapes:
            r = subprocess.run(
                ["ip", "netns", "exec", self.ns(n), "tc", "qdisc", "add", "dev", "eth0", "root", *qdisc],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                self.slowed.add(n)
                return name
            errors.append(f"{name}: {r.stderr.strip()}")
        raise NetnsError(f"cannot slow node {n}: {'; '.join(errors)}")

    def heal_slow_node(self, n: int) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns(n), "tc", "qdisc", "del", "dev", "eth0", "root"], capture_output=True)
        self.slowed.discard(n)

    def heal_slow(self) -> None:
        for n in list(self.slowed):
            self.heal_slow_node(n)
