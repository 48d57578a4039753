"""Cluster control: spawn, signal and watch node processes through a run directory.

A run directory (default `run/`) holds everything a later invocation needs to find
the cluster again:

    run/config.toml     the cluster's config (written by `up`)
    run/node-N.pid      the pid of node N while it runs
    run/node-N.out      node N's stdout and stderr (start-up errors land here)

A pid file is trusted only if that pid is alive *and* is `raftproc.node --id N`:
a dead node or a pid reused by another program reads as a stale pid file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from raftproc.client import Client, ClientError
from raftproc.config import ClusterConfig, NodeAddress, load_config, to_toml
from raftproc.ops.certs import secure_cluster
from raftproc.ops.control import ClusterError, NodeProcess
from raftproc.ops.links import LinkTable
from raftproc.ops.operations import ClusterOperations
from raftproc.runtime.dirlock import holder_of
from raftproc.runtime.tls import client_context_for


class Cluster:
    def __init__(
        self,
        run_dir: str | Path = "run",
        *,
        launcher: list[str] | None = None,
        env: dict[str, str] | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        """`launcher` is what runs a node before its `--id N --config PATH`
        (default: this interpreter with -m raftproc.node); "{id}" in it becomes N.
        `config_path`: a cluster this supervisor did not start (default: the run
        directory's own); its processes are not ours to control."""
        self.run_dir = Path(run_dir).resolve()
        self.config_path = Path(config_path).resolve() if config_path else self.run_dir / "config.toml"
        self.launcher = launcher or [sys.executable, "-m", "raftproc.node"]
        self.env = env or {}  # extra environment for the nodes
        self._tls_context: tuple[Any, Any] | None = None  # (client TLS files, their context)
        self._children: dict[int, subprocess.Popen] = {}  # the last process started per node
        self.operations = ClusterOperations(self)  # membership, handover, rolling restart: below

    # --- set-up -------------------------------------------------------------------

    def create(self, cfg: ClusterConfig, *, tls: bool = False) -> ClusterConfig:
        """Write a new cluster's config; with `tls`, mint its CA and certificates in
        run/tls first (raftproc.ops.certs) and name them in the config."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        running = [p.node_id for p in self.processes() if p.state in ("running", "paused")] if self.config_path.exists() else []
        if running:
            raise ClusterError(f"a cluster is already running from {self.run_dir} (nodes {running}); run `down` first")
        if tls:
            cfg = secure_cluster(cfg, self.tls_dir)
        self.config_path.write_text(to_toml(cfg))
        (self.run_dir / "removed").unlink(missing_ok=True)  # a new cluster: nobody removed yet
        (self.run_dir / "links.json").unlink(missing_ok=True)  # and no link cut or slowed
        return cfg

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def config(self) -> ClusterConfig:
        if not self.config_path.exists():
            raise ClusterError(f"no cluster in {self.run_dir}: run `up` first")
        return load_config(self.config_path)

    def up(self, wait: float = 15.0) -> None:
        """Start every member and wait for a leader. The nodes that answer must be the
        processes started here (their pid in status): a port held by another cluster
        makes a node exit, and its neighbours' answers must not pass for ours. On
        such a failure the nodes started here are stopped again and the other
        cluster is left alone."""
        removed = self.removed()
        started = [n for n in self.config.nodes if n not in removed]
        for node_id in started:
            self.start(node_id, wait=0)
        try:
            self._wait_ours(started, wait)
            self.wait_for_leader(wait)
        except ClusterError:
            self.down(timeout=3)
            raise

    def _wait_ours(self, nodes: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(nodes)
        while waiting:
            for n in sorted(waiting):
                p = self.process(n)
                if p.state not in ("running", "paused"):
                    raise ClusterError(self._exited_at_start(n))
                s = self.node_status(n, timeout=0.3)
                if s is not None and s.get("pid") != p.pid:
                    a = self.config.node(n).client
                    raise ClusterError(
                        f"{a[0]}:{a[1]} is answered by another process (pid {s.get('pid')}), not node {n} (pid {p.pid}): "
                        "another cluster holds these ports"
                    )
                if s is not None:
                    waiting.discard(n)
            if waiting and time.monotonic() > deadline:
                raise ClusterError(f"nodes {sorted(waiting)} did not answer within {timeout}s")
            if waiting:
                time.sleep(0.05)  # poll interval of a wait-until loop

    def down(self, timeout: float = 5.0) -> list[int]:
        """SIGTERM every node at once (one by one would set off an election per
        stop), then SIGKILL whatever has not exited by `timeout`."""
        alive = [p for p in self.processes() if p.state in ("running", "paused")]
        for p in alive:
            if p.state == "paused":
                self._signal(p.node_id, signal.SIGCONT)
            self._signal(p.node_id, signal.SIGTERM)
        for p in alive:
            if not self._wait_gone(p.node_id, timeout):
                self._signal(p.node_id, signal.SIGKILL)
                self._wait_gone(p.node_id, timeout)
        for p in self.processes():
            self._pid_file(p.node_id).unlink(missing_ok=True)
        return [p.node_id for p in alive]

    def removed(self) -> set[int]:
        """Nodes removed from the cluster: `up` leaves them stopped. They stay in the
        config file (its first configuration must never change)."""
        path = self.run_dir / "removed"
        return {int(x) for x in path.read_text().split()} if path.exists() else set()

    def mark_removed(self, node_id: int, removed: bool) -> None:
        ids = self.removed() | {node_id} if removed else self.removed() - {node_id}
        (self.run_dir / "removed").write_text("".join(f"{i}\n" for i in sorted(ids)))

    # --- operations through the leader (raftproc.ops.operations) ---------------------

    def join(self, timeout: float = 60.0, *, place: Callable[[int], NodeAddress] | None = None) -> int:
        return self.operations.join(timeout, place=place)

    def add(self, node_id: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.operations.add(node_id, timeout)

    def remove(self, node_id: int, timeout: float = 30.0) -> dict[str, Any]:
        return self.operations.remove(node_id, timeout)

    def rebuild(self, node_id: int, timeout: float = 120.0) -> dict[str, Any]:
        return self.operations.rebuild(node_id, timeout)

    def members(self) -> dict[str, Any]:
        return self.operations.members()

    def rolling_restart(self, timeout: float = 30.0, say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
        return self.operations.rolling_restart(timeout, say)

    def transfer(self, target: int | None = None, timeout: float = 10.0) -> int:
        return self.operations.transfer(target, timeout)

    # --- one node -------------------------------------------------------------------

    def start(self, node_id: int, wait: float = 5.0, *, rebuild: bool = False) -> int:
        """Start node `node_id` and wait up to `wait` seconds for it to answer (0: do
        not wait). A node that exits meanwhile is reported with its exit code and
        last line (ClusterError); if it exited because its data directory is held by
        a running copy of the node, that copy is what the pid file names again, so
        the supervisor never loses track of a process it started. `rebuild`: the node
        wipes its data first and waits to be added (raftproc.node --rebuild)."""
        self.check_known(node_id)
        current = self.process(node_id)
        if current.state in ("running", "paused"):
            raise ClusterError(f"node {node_id} is already {current.state} (pid {current.pid})")
        proc = self._spawn(node_id, ["--rebuild"] if rebuild else [])
        if wait > 0:
            self._wait_started(node_id, proc, wait)
        return proc.pid

    def _spawn(self, node_id: int, extra: list[str]) -> subprocess.Popen:
        out = open(self.run_dir / f"node-{node_id}.out", "ab")  # noqa: SIM115
        env = {**os.environ, **self.env, **self.links().env_for(node_id)}
        proc = subprocess.Popen(
            [*(part.format(id=node_id) for part in self.launcher), "--id", str(node_id), "--config", str(self.config_path), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=self.run_dir,
        )
        out.close()
        self._children[node_id] = proc  # to read its exit code, and to reap it
        self._pid_file(node_id).write_text(f"{proc.pid}\n")
        # Until the child has exec'd, its command line is ours and it would read
        # as a stale pid; callers expect a started node to show as running.
        deadline = time.monotonic() + 5.0
        while self.process(node_id).state == "stale-pid" and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # poll interval of a wait-until loop
        return proc

    def _wait_started(self, node_id: int, proc: subprocess.Popen, wait: float) -> None:
        """Until the node answers status as itself, or exits (ClusterError), or
        `wait` passes (a long WAL recovery: it is left starting)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(self._exited_at_start(node_id))
            s = self.node_status(node_id, timeout=0.3)
            if s is not None and s.get("pid") == proc.pid:
                return
            time.sleep(0.02)  # poll interval of a wait-until loop

    def _exited_at_start(self, node_id: int) -> str:
        """Why node `node_id` exited during start-up; a copy of it that still holds
        its data directory is tracked again."""
        child = self._children.get(node_id)
        code = child.poll() if child is not None else None
        why = f"node {node_id} exited during start-up" + (f" with code {code}" if code is not None else "")
        why += f": {self.last_output(node_id, 1) or 'no output'}"
        holder = holder_of(self.config.node_data_dir(node_id))
        if holder is not None and self._psutil(node_id, holder) is not None:
            self._pid_file(node_id).write_text(f"{holder}\n")
            why += f" (node {node_id} runs already as pid {holder}; tracking it again)"
        return why

    def kill(self, node_id: int) -> None:
        """SIGKILL. The pid file stays, so `status` shows the node as dead."""
        self._signal(node_id, signal.SIGKILL)
        self._wait_gone(node_id, 5.0)

    def stop(self, node_id: int, timeout: float = 5.0) -> None:
        p = self.process(node_id)
        if p.state == "paused":
            self._signal(node_id, signal.SIGCONT)
        self._signal(node_id, signal.SIGTERM)
        if not self._wait_gone(node_id, timeout):
            self._signal(node_id, signal.SIGKILL)
            self._wait_gone(node_id, timeout)
        self._pid_file(node_id).unlink(missing_ok=True)

    def graceful_stop(self, node_id: int, timeout: float = 10.0) -> int | None:
        """Stop a node; a leader first hands leadership to its most up-to-date
        follower, so clients see no election timeout. Returns the new leader, if any."""
        status = self.node_status(node_id)
        new_leader = None
        running = [p.node_id for p in self.processes() if p.state == "running" and p.node_id != node_id]
        if status is not None and status["role"] == "leader" and running:
            client = self.client(timeout=timeout)
            try:
                new_leader = client.transfer(ask=node_id)
            except ClientError as e:
                raise ClusterError(f"node {node_id} could not hand over leadership: {e}") from None
            finally:
                client.close()
        self.stop(node_id)
        return new_leader

    # --- link faults (raftproc.ops.links) ---------------------------------------------

    def links(self) -> LinkTable:
        return LinkTable.load(self.run_dir)

    def change_links(self, change: Callable[[LinkTable], None]) -> dict[int, str]:
        """Change the table of cut and slowed links, keep it, and send each running
        node its part. Returns the running nodes that did not take it, and why (they
        get it when they next start; the other end of each cut holds meanwhile)."""
        if not self.config.link_faults:
            raise ClusterError(
                f"the nodes of {self.config_path} do not take injected link faults: their config needs link_faults = true (`up` sets it)"
            )
        table = self.links()
        try:
            change(table)
        except ValueError as e:
            raise ClusterError(str(e)) from None
        table.save(self.run_dir)
        missed: dict[int, str] = {}
        waiting = [p.node_id for p in self.processes() if p.state == "running"]
        deadline = time.monotonic() + 3.0  # a node started a moment ago may not listen yet
        client = self.client()
        try:
            while waiting:
                for node_id in list(waiting):
                    try:
                        client.link_faults(node_id, table.faults_for(node_id).to_wire())
                        waiting.remove(node_id)
                        missed.pop(node_id, None)
                    except (OSError, ClientError) as e:
                        missed[node_id] = str(e) or type(e).__name__
                        if self.process(node_id).state != "running":
                            waiting.remove(node_id)
                if waiting and time.monotonic() > deadline:
                    break
                if waiting:
                    time.sleep(0.05)  # poll interval of a wait-until loop
        finally:
            client.close()
        return missed

    def partition(self, node_id: int) -> dict[int, str]:
        """Cut `node_id` off from every other node, both ways."""
        self.check_known(node_id)
        return self.change_links(lambda t: t.cut_off(node_id, self.config.nodes))

    def split(self, groups: list[list[int]]) -> dict[int, str]:
        for g in groups:
            for n in g:
                self.check_known(n)
        return self.change_links(lambda t: t.split(groups))

    def slow_link(self, src: int, dst: int, ms: int) -> dict[int, str]:
        self.check_known(src)
        self.check_known(dst)
        return self.change_links(lambda t: t.slow(src, dst, ms))

    def heal(self) -> dict[int, str]:
        return self.change_links(LinkTable.heal)

    def restart(self, node_id: int) -> int:
        if self.process(node_id).state in ("running", "paused"):
            self.stop(node_id)
        return self.start(node_id)

    def pause(self, node_id: int) -> None:
        self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self._signal(node_id, signal.SIGCONT)

    # --- looking --------------------------------------------------------------------

    def processes(self) -> list[NodeProcess]:
        return [self.process(i) for i in sorted(self.config.nodes)]

    def process_states(self) -> dict[int, tuple[str, int | None]]:
        """{node: (state, pid)} as the live page names states: running, paused,
        dead or stopped (a pid file naming another program reads as dead)."""
        return {p.node_id: ("dead" if p.state == "stale-pid" else p.state, p.pid) for p in self.processes()}

    def process(self, node_id: int) -> NodeProcess:
        path = self._pid_file(node_id)
        if not path.exists():
            return NodeProcess(node_id, None, "stopped")
        try:
            pid = int(path.read_text().strip())
        except ValueError:
            return NodeProcess(node_id, None, "stale-pid")
        try:
            proc = psutil.Process(pid)
            status = proc.status()
            if status == psutil.STATUS_ZOMBIE:
                return NodeProcess(node_id, pid, "dead")
            ours = self._psutil(node_id, pid) is not None
        except psutil.Error:
            return NodeProcess(node_id, pid, "dead")
        if not ours:
            return NodeProcess(node_id, pid, "stale-pid")
        return NodeProcess(node_id, pid, "paused" if status == psutil.STATUS_STOPPED else "running")

    def client(self, **kw: Any) -> Client:
        cfg = self.config
        files = cfg.client_tls()
        # Status probes build a client each: load the certificate files once per set.
        if self._tls_context is None or self._tls_context[0] != files:
            self._tls_context = (files, client_context_for(files))
        return Client(cfg.client_addresses(), tls=self._tls_context[1], **kw)

    def any_leader(self) -> int | None:
        """A node that says it leads right now, if any (no waiting)."""
        for p in self.processes():
            if p.state == "running":
                s = self.node_status(p.node_id, timeout=0.2)
                if s is not None and s["role"] == "leader":
                    return p.node_id
        return None

    def node_status(self, node_id: int, timeout: float = 0.5, *, state: bool = False) -> dict[str, Any] | None:
        c = self.client()
        try:
            return c.status(node_id, timeout=timeout, state=state)
        except Exception:
            return None
        finally:
            c.close()

    def status_table(self) -> list[dict[str, Any]]:
        rows = []
        for p in self.processes():
            row: dict[str, Any] = {"node": p.node_id, "pid": p.pid, "state": p.state}
            if p.state == "running":
                s = self.node_status(p.node_id)
                if s:
                    row.update({k: s.get(k) for k in ("role", "term", "leader", "commit_index", "last_applied", "log_digest", "diverged")})
            if p.pid and p.state in ("running", "paused"):
                proc = self._psutil(p.node_id, p.pid)
                if proc is not None:
                    try:
                        row["rss_mb"] = round(proc.memory_info().rss / 2**20, 1)
                        row["cpu_s"] = round(sum(proc.cpu_times()[:2]), 2)
                    except psutil.Error:
                        pass
            rows.append(row)
        return rows

    def leader(self) -> int | None:
        """The node that says it leads the highest term, if a majority agree on it."""
        statuses = [s for s in (self.node_status(p.node_id) for p in self.processes() if p.state == "running") if s]
        leaders = [s for s in statuses if s["role"] == "leader"]
        if not leaders:
            return None
        best = max(leaders, key=lambda s: s["term"])
        voters = set(best["membership"]["voters"])
        followers = sum(1 for s in statuses if s["leader"] == best["node"] and s["term"] == best["term"] and s["node"] in voters)
        return best["node"] if followers >= len(voters) // 2 + 1 else None

    def wait_for_leader(self, timeout: float = 10.0, *, other_than: int | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader != other_than:
                return leader
            time.sleep(0.05)  # poll interval of a wait-until loop
        dead = [p for p in self.processes() if p.state not in ("running", "paused")]
        hint = "; ".join(f"node {p.node_id} {p.state}: {self.last_output(p.node_id)}" for p in dead)
        raise ClusterError(f"no leader within {timeout}s" + (f" ({hint})" if hint else ""))

    def wait_converged(self, timeout: float = 10.0, *, state: bool = False) -> list[dict[str, Any]]:
        """Wait until every running node has applied the same log (same last_applied
        and digest, at the leader's commit index); return their statuses (with the
        state digest if `state`). Where a node cannot name its log (a snapshot from
        before the chain links left `log_digest` empty) the state digests must agree."""
        deadline = time.monotonic() + timeout
        statuses: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            running = [p.node_id for p in self.processes() if p.state == "running"]
            statuses = [s for s in (self.node_status(i, state=state) for i in running) if s]
            if not state and any(not s["log_digest"] for s in statuses):
                state = True
                continue
            if len(statuses) == len(running) and statuses:
                leader = [s for s in statuses if s["role"] == "leader"]
                digests = {(s["last_applied"], s["log_digest"], s.get("state_digest")) for s in statuses}
                if leader and len(digests) == 1 and statuses[0]["last_applied"] == leader[0]["commit_index"]:
                    return statuses
            time.sleep(0.05)  # poll interval of a wait-until loop
        raise ClusterError(
            f"nodes did not converge within {timeout}s: "
            + ", ".join(f"node {s['node']} applied {s['last_applied']} digest {s['log_digest'][:12]}" for s in statuses)
        )

    def last_output(self, node_id: int, lines: int = 3) -> str:
        path = self.run_dir / f"node-{node_id}.out"
        if not path.exists():
            return ""
        # The plaintext warning repeats at every start: it would crowd out the line
        # that says why the node stopped.
        said = [line for line in path.read_text(errors="replace").strip().splitlines() if "WITHOUT TLS" not in line]
        return " | ".join(said[-lines:])

    # --- helpers --------------------------------------------------------------------

    def _pid_file(self, node_id: int) -> Path:
        return self.run_dir / f"node-{node_id}.pid"

    def _psutil(self, node_id: int, pid: int) -> psutil.Process | None:
        """The process, if it is node `node_id` of this cluster (pids get reused)."""
        try:
            proc = psutil.Process(pid)
            cmd = proc.cmdline()
        except psutil.Error:
            return None
        wanted = ["--id", str(node_id), "--config", str(self.config_path)]
        if any(cmd[i : i + 4] == wanted for i in range(len(cmd))):
            return proc
        return None

    def leader_now(self, what: str, timeout: float = 3.0) -> int:
        """The leader, found within a few seconds, or a clear refusal: commands that need
        a working cluster must not sit silent for a minute when it is down."""
        running = [p.node_id for p in self.processes() if p.state == "running"]
        if not running:
            raise ClusterError(f"{what} needs a running cluster, and no node of {self.run_dir} runs (`up` starts it)")
        try:
            return self.wait_for_leader(timeout=timeout)
        except ClusterError as e:
            raise ClusterError(f"{what} needs a leader: {e}") from None

    def check_known(self, node_id: int) -> None:
        nodes = sorted(self.config.nodes)
        if node_id not in nodes:
            raise ClusterError(f"node {node_id} is not in the cluster (nodes {nodes})")

    def _signal(self, node_id: int, sig: signal.Signals) -> None:
        self.check_known(node_id)
        p = self.process(node_id)
        if p.state not in ("running", "paused") or p.pid is None:
            raise ClusterError(f"node {node_id} is not running ({p.state})")
        os.kill(p.pid, sig)

    def _wait_gone(self, node_id: int, timeout: float) -> bool:
        p = self.process(node_id)
        if p.pid is None:
            return True
        try:
            proc = psutil.Process(p.pid)
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            return False
        except psutil.Error:
            pass
        return True
