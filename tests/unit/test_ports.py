"""Ports for local clusters: outside the kernel's source-port range (a node killed
and restarted must find its port free, though other nodes keep connecting out),
and never the same for two clusters started side by side."""

from __future__ import annotations

import subprocess
import sys

import pytest

from raftproc.ops import layout
from raftproc.ops.layout import free_ports, listen_range


def test_ports_come_from_outside_the_source_port_range():
    lo, hi = listen_range()
    ports = free_ports(12)
    assert len(set(ports)) == 12
    assert all(lo <= p < hi for p in ports)
    first, last = (int(n) for n in layout._EPHEMERAL_RANGE.read_text().split())
    assert all(p < first or p > last for p in ports)


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ("32768\t60999", (20000, 32768)),  # Linux's default: all of LISTEN_PORTS
        ("1024 15000", (20000, 32768)),  # below it
        ("25000 60999", (20000, 25000)),  # overlapping its top
        ("10000 30000", (30001, 32768)),  # overlapping its bottom
        ("1024 65000", (65001, 65536)),  # nearly everything: above it
        ("garbage", (20000, 32768)),
    ],
)
def test_the_range_avoids_whatever_the_kernel_says(tmp_path, monkeypatch, ephemeral, expected):
    (tmp_path / "range").write_text(ephemeral)
    monkeypatch.setattr(layout, "_EPHEMERAL_RANGE", tmp_path / "range")
    assert listen_range() == expected


def test_the_counter_moves_on_and_wraps_around(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(layout, "listen_range", lambda: (20000, 20020))
    assert free_ports(4) != free_ports(4)
    handed = [p for _ in range(10) for p in free_ports(3)]
    assert set(handed) <= set(range(20000, 20020))
    (next(tmp_path.glob("raftproc-*")) / "ports").write_text("not a port")
    assert len(free_ports(3)) == 3


def test_processes_asking_at_once_get_different_ports():
    code = "from raftproc.ops.layout import free_ports; print(*free_ports(40))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    handed = [int(p) for proc in procs for p in proc.communicate(timeout=60)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(handed) == len(set(handed)) == 160
