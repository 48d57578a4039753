"""The operator's commands: `supervisor logs` (--tail, -f, the event filter), the
exit codes `supervisor status` and `raftproc status` share, the one line a node run
by hand prints, and the console commands `pip install` gives."""

from __future__ import annotations

import dataclasses
import queue
import shutil
import signal
import site
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import make_cluster
from support import wait_until

from raftproc.core.divergence import Divergence
from raftproc.ops.logs import known_events, read_lines
from raftproc.runtime.identity import record_divergence

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]
SUPERVISOR = REPO / "scripts" / "supervisor.py"


def sup(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SUPERVISOR), "--run-dir", str(run_dir), *args], capture_output=True, text=True, timeout=60)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raftproc.client", "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


class Lines:
    """A child's stdout, a line at a time, each read waiting at most `timeout`."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)  # end of output

    def next(self, timeout: float = 20) -> str | None:
        return self.queue.get(timeout=timeout)

    def rest(self, timeout: float = 20) -> list[str]:
        """Every line until the output ends (the child must be on its way out)."""
        lines = []
        while (line := self.next(timeout)) is not None:
            lines.append(line)
        return lines


def node_of(line: str) -> int:
    """The node a `logs` line is from: its second field, n3 (or !n3 for a warning)."""
    return int(line.split()[1].lstrip("!n"))


def follow_logs(run_dir: Path, *args: str) -> tuple[subprocess.Popen, Lines]:
    # A test worker may run with SIGINT ignored, which a child inherits: Ctrl-C in a
    # shell reaches the command with the default disposition, so the child gets that.
    proc = subprocess.Popen(
        [sys.executable, str(SUPERVISOR), "--run-dir", str(run_dir), "logs", "-f", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc, Lines(proc)


def interrupt(proc: subprocess.Popen, lines: Lines) -> list[str]:
    """Ctrl-C: the follow ends quietly with exit 0; the lines it printed meanwhile."""
    proc.send_signal(signal.SIGINT)
    rest = lines.rest()
    assert proc.wait(20) == 0
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    return rest


def test_logs_tail_and_follow_start_from_the_last_lines(cluster_factory):
    cluster = cluster_factory(3)
    run = cluster.run_dir
    client = cluster.client(timeout=20)
    client.set("x", "1")
    client.close()
    first = cluster.wait_for_leader()
    cluster.transfer(next(n for n in cluster.config.nodes if n != first))  # a second election to leave out
    elections = sup(run, "logs", "--event", "became_leader").stdout.splitlines()
    assert len(elections) >= 2
    proc, lines = follow_logs(run, "--tail", "1", "--event", "became_leader")
    try:
        assert lines.next() == elections[-1], "-f --tail 1 starts from the last matching line"
        leader = cluster.transfer(first)
        new = lines.next()
        assert new is not None and "became_leader" in new and node_of(new) == leader and new not in elections, new
        interrupt(proc, lines)
    finally:
        proc.kill()
    cluster.down()

    # Stopped nodes write nothing more: the whole log is known.
    everything = sup(run, "logs").stdout.splitlines()
    assert len(everything) > 10
    tail = sup(run, "logs", "--tail", "5")
    assert tail.returncode == 0 and tail.stdout.splitlines() == everything[-5:]
    assert sup(run, "logs", "--tail", "0").stdout == ""
    proc, lines = follow_logs(run)
    try:
        assert [lines.next() for _ in range(10)] == everything[-10:], "-f alone starts from the last 10 lines, as tail -f does"
        assert interrupt(proc, lines) == [], "and only those: nothing new was written"
    finally:
        proc.kill()
    proc, lines = follow_logs(run, "--tail", "0")
    try:
        cluster.start(1)  # alone it campaigns again and again: lines keep coming
        new = lines.next()
        assert new is not None and new not in everything and node_of(new) == 1, "--tail 0: only what is written from now on"
    finally:
        proc.kill()
        cluster.down()

    logged = {str(r.get("event")) for n in cluster.config.nodes for r in read_lines(cluster.config.node_log_file(n))}
    assert logged - known_events() == set(), "every event a node wrote is one `logs --event` knows"


def test_logs_refuses_an_event_no_node_logs(tmp_path):
    r = sup(tmp_path / "run", "logs", "--event", "became_leadr")
    assert r.returncode == 2 and "'became_leadr'" in r.stderr and "became_leader" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_status_exits_alike_from_the_supervisor_and_the_cli(cluster_factory):
    """Same cluster, same code: 0 healthy, 6 no agreed leader (a cut-off leader),
    5 a member down, 6 a diverged log."""
    cluster = cluster_factory(3, link_faults=True)

    def codes() -> tuple[int, int]:
        return sup(cluster.run_dir, "status").returncode, cli(cluster.config_path, "status").returncode

    def both(code: int, what: str) -> None:
        wait_until(lambda: codes() == (code, code), 30, f"both to exit {code}: {what}")

    both(0, "healthy")
    leader = cluster.wait_for_leader()
    cluster.partition(leader)
    both(6, "the old leader, cut off, names none or itself")
    cluster.heal()
    both(0, "healed")
    follower = next(n for n in cluster.config.nodes if n != cluster.wait_for_leader())
    cluster.kill(follower)
    both(5, "a member down")
    alarm = Divergence(index=2, local_term=1, leader_term=2, leader=leader, reason="planted by the test")
    record_divergence(cluster.config.node_data_dir(follower), dataclasses.asdict(alarm))
    cluster.start(follower)
    both(6, "a diverged log")
    said = sup(cluster.run_dir, "status")
    assert f"ALARM node {follower}" in said.stdout and "DIVERGED" in said.stderr, (said.stdout, said.stderr)
    assert "DIVERGED" in cli(cluster.config_path, "status").stderr


def test_a_node_run_by_hand_prints_one_line_then_stays_quiet(tmp_path):
    cluster = make_cluster(tmp_path, 1)
    cfg = cluster.config
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftproc.node", "--id", "1", "--config", str(cluster.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        lines = Lines(proc)
        said = lines.next()
        me = cfg.node(1)
        assert me.metrics is not None and said is not None
        for what, (host, port) in (("peers", me.peer), ("clients", me.client), ("metrics", me.metrics)):
            assert f"{what} on {host}:{port}" in said, said
        assert said.endswith(f"logs to {cfg.node_log_file(1)}"), said
        wait_until(lambda: (s := cluster.node_status(1)) and s["role"] == "leader", 20, "the node to lead itself")
        proc.send_signal(signal.SIGTERM)
        assert lines.rest() == [], "one line, then quiet"
        assert proc.wait(20) == 0 and proc.stderr is not None and proc.stderr.read() == ""
    finally:
        proc.kill()
    events = [r["event"] for r in read_lines(cfg.node_log_file(1))]
    assert "became_leader" in events and "node_stopped" in events, "its story went to its log file"


def test_the_supervisors_nodes_put_their_line_in_their_output_file(cluster_factory):
    """The supervisor keeps a node's stdout and stderr in run/node-N.out and reads its
    last lines when the node fails: the started line is there, once per start."""
    cluster = cluster_factory(1)
    out = (cluster.run_dir / "node-1.out").read_text().splitlines()
    assert len(out) == 1 and out[0].startswith("raftproc.node: node 1 listens for peers on"), out
    assert sup(cluster.run_dir, "status").returncode == 0


def test_pip_install_gives_the_three_commands(tmp_path):
    """`pip install .` into a fresh virtualenv, offline: the build tools and the
    dependencies come from the suite's own environment."""
    pytest.importorskip("wheel", reason="setuptools < 70.1 builds wheels with the wheel package: the test extra should list it")
    src = tmp_path / "src"
    shutil.copytree(REPO / "raftproc", src / "raftproc", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    Path(purelib, "suite.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed", str(src)]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    where = subprocess.run([python, "-c", "import raftproc; print(raftproc.__file__)"], capture_output=True, text=True, cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), "the commands run the installed copy"
    for command in ("raftproc-node", "raftproc", "raftproc-supervisor"):
        r = subprocess.run([venv / "bin" / command, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (command, r.stderr)
