"""The systems raftproc is measured beside: Debian's etcd and PySyncObj (the node in
raftproc/ops/peers/pysyncobj_node.py), a few server processes each that we start,
watch and stop. Each is installed on first use: PySyncObj into its own virtualenv,
never into raftproc's; etcd from Debian, when running as root."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from raftproc.client import Client
from raftproc.config import Address
from raftproc.ops.layout import free_ports

T = TypeVar("T")
PYSYNCOBJ = "pysyncobj==0.3.17"


def pysyncobj_python(venv: Path) -> str:
    """The interpreter of a virtualenv at `venv` with PySyncObj (made on first use)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing {PYSYNCOBJ} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", PYSYNCOBJ, "cbor2"], check=True)
    return str(python)


def etcd_binary() -> str | None:
    """etcd on PATH, or Debian's etcd-server installed when running as root; None without."""
    found = shutil.which("etcd")
    if found:
        return found
    if os.geteuid() != 0:
        print("etcd skipped: not installed, and installing Debian's etcd-server needs root")
        return None
    print("installing Debian's etcd-server ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], env=env, check=False, capture_output=True)
    return shutil.which("etcd")


def wait_for(find: Callable[[], T | None], timeout: float, what: str) -> T:
    """What `find` returns once it returns something, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = find()
        if value:
            return value
        time.sleep(0.1)  # poll interval of a wait-until loop
    raise RuntimeError(f"timed out waiting for {what}")


class ProcessTarget:
    """A peer system: a few server processes we start, watch and stop."""

    system = "?"
    protocol = "raftproc"
    config: Path | None = None  # no TLS

    def __init__(self, nodes: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.system}-bench-"))
        self.procs: list[subprocess.Popen] = []
        ports = free_ports(2 * nodes)
        self.peer_ports, client_ports = ports[:nodes], ports[nodes:]
        self.clients: list[Address] = [("127.0.0.1", port) for port in client_ports]

    def spawn(self, args: list[str], name: str) -> None:
        out = open(self.tmp / f"{name}.out", "wb")  # noqa: SIM115
        self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmp))

    def node_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def leader_changes_marker(self) -> int:
        return 0

    def close(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait(10)


class EtcdTarget(ProcessTarget):
    """Debian's etcd, one member per process on loopback, fsync before reply."""

    system = "etcd"
    protocol = "etcd"

    def __init__(self, nodes: int, binary: str = "etcd") -> None:
        super().__init__(nodes)
        peers = [f"http://127.0.0.1:{port}" for port in self.peer_ports]
        cluster = ",".join(f"n{i}={url}" for i, url in enumerate(peers))
        for i, (peer, (host, port)) in enumerate(zip(peers, self.clients, strict=True)):
            client = f"http://{host}:{port}"
            self.spawn(
                [binary, "--name", f"n{i}", "--data-dir", str(self.tmp / f"n{i}")]
                + ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
                + ["--listen-client-urls", client, "--advertise-client-urls", client]
                + ["--initial-cluster", cluster, "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "error"],
                f"n{i}",
            )
        self.leader_address()

    def _status(self, address: Address) -> dict[str, Any] | None:
        try:
            conn = http.client.HTTPConnection(*address, timeout=1)
            conn.request("POST", "/v3/maintenance/status", body="{}", headers={"Content-Type": "application/json"})
            data = json.loads(conn.getresponse().read())
            conn.close()
            return data
        except (OSError, ValueError):
            return None

    def _leads(self, address: Address) -> bool:
        s = self._status(address)
        return bool(s and s.get("leader") and s["leader"] == s.get("header", {}).get("member_id"))

    def leader_address(self) -> Address:
        return wait_for(lambda: next((a for a in self.clients if self._leads(a)), None), 30, "an etcd leader")

    def leader_changes_marker(self) -> int:
        terms = [int(s.get("raftTerm", 0)) for s in (self._status(a) for a in self.clients) if s]
        return max(terms, default=0)


class PySyncObjTarget(ProcessTarget):
    """PySyncObj nodes (raftproc/ops/peers/pysyncobj_node.py) in their own venv."""

    system = "pysyncobj"

    def __init__(self, nodes: int, python: str) -> None:
        super().__init__(nodes)
        raft = [f"127.0.0.1:{port}" for port in self.peer_ports]
        script = str(Path(__file__).parents[1] / "peers" / "pysyncobj_node.py")
        for i, (_, client_port) in enumerate(self.clients):
            others = [a for j, a in enumerate(raft) if j != i]
            self.spawn([python, script, raft[i], str(client_port), str(self.tmp / f"journal-{i}"), *others], f"n{i}")
        self.leader_address()

    def _leads(self, i: int, address: Address) -> bool:
        c = Client({i: address})
        try:
            return bool(c.status(i, timeout=1).get("is_leader"))
        except Exception:  # noqa: BLE001 - not up yet, or not answering: not the leader now
            return False
        finally:
            c.close()

    def leader_address(self) -> Address:
        return wait_for(lambda: next((a for i, a in enumerate(self.clients) if self._leads(i, a)), None), 30, "a PySyncObj leader")
