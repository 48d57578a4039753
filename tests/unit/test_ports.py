"""Ports for local clusters: outside the kernel's source-port range (a node killed
and restarted must find its port free, though other nodes keep connecting out),
and never the same for two clusters started side by side."""

from __future__ import annotations

import subprocess
import sys

from raftproc.ops.layout import LISTEN_PORTS, _ephemeral_low, free_ports


def test_ports_come_from_below_the_source_port_range():
    ports = free_ports(12)
    assert len(set(ports)) == 12
    assert all(LISTEN_PORTS[0] <= p < min(LISTEN_PORTS[1], _ephemeral_low()) for p in ports)


def test_processes_asking_at_once_get_different_ports():
    code = "from raftproc.ops.layout import free_ports; print(*free_ports(40))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    handed = [int(p) for proc in procs for p in proc.communicate(timeout=60)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(handed) == len(set(handed)) == 160
