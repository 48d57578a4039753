"""One raftproc server: `raftproc-node --id N [--config PATH]` (or `python -m raftproc.node`).

Wiring, in order: config -> logging -> WAL recovery -> RaftNode -> event loop
(see raftproc.server.host). Every start-up problem is one clear line on stderr and
a non-zero exit: an unknown id, a malformed config, a port in use, a data directory
that cannot be written or holds another node's data, a corrupt WAL. A node that
starts prints one line, where it listens and where it logs, and nothing more: its
story goes to its JSON log file.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from raftproc.config import ClusterConfig, ConfigError, load_config
from raftproc.runtime.addresses import is_loopback
from raftproc.runtime.dirlock import DataDirInUse, lock_data_dir
from raftproc.runtime.identity import IdentityError, rebuild_data_dir
from raftproc.runtime.linkfaults import ENV as LINK_FAULTS_ENV
from raftproc.runtime.linkfaults import NO_FAULTS, LinkFaults, LinkFaultsError, parse_link_faults
from raftproc.runtime.logging import configure
from raftproc.runtime.skew import clock_for
from raftproc.runtime.tls import TlsError
from raftproc.runtime.wal import SyncFailed, WalCorruption

if TYPE_CHECKING:
    from raftproc.server.host import NodeHost

EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_CORRUPT = 4
EXIT_DISK = 5


class Exit(Exception):
    """The node cannot go on: `message` is its one line on stderr, `code` its exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {what} {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable")


def link_faults_from_env() -> LinkFaults:
    """The injected link faults to start with (raftproc.runtime.linkfaults): the
    supervisor passes them so that a node restarted while cut off stays cut off."""
    text = os.environ.get(LINK_FAULTS_ENV)
    if not text:
        return NO_FAULTS
    try:
        body = json.loads(text)
        if not isinstance(body, dict):
            raise LinkFaultsError("it must be a JSON object")
        return parse_link_faults(body)
    except (ValueError, LinkFaultsError) as e:
        raise ConfigError(f"{LINK_FAULTS_ENV}: {e}") from None


def checked_config(path: str | None, node_id: int) -> tuple[ClusterConfig, LinkFaults]:
    """The config and the link faults to start with, with every problem found before
    anything is opened: an unknown id, a data or log directory that cannot be
    written, TLS files that are missing, link faults the config does not allow."""
    cfg = load_config(path)
    cfg.node(node_id)
    check_writable(cfg.node_data_dir(node_id), "data directory")
    check_writable(cfg.log_dir, "log directory")
    cfg.node_tls(node_id)
    link_faults = link_faults_from_env()
    if link_faults.active and not cfg.link_faults:
        raise ConfigError(f"{LINK_FAULTS_ENV} is set, and the config does not allow injected link faults (link_faults = true)")
    return cfg, link_faults


def claim_data_dir(cfg: ClusterConfig, node_id: int, *, rebuild: bool) -> int:
    """Lock the node's data directory (its descriptor); with `rebuild`, wipe it first."""
    fd = lock_data_dir(cfg.node_data_dir(node_id))
    if rebuild:
        rebuild_data_dir(cfg.node_data_dir(node_id))
        print(
            f"raftproc.node: node {node_id}: data directory {cfg.node_data_dir(node_id)} wiped; it waits to be added "
            f"(`member add {node_id} PEER CLIENT` on the leader) and catches up from it",
            file=sys.stderr,
        )
    return fd


def warn_if_insecure(cfg: ClusterConfig, node_id: int, log: Callable[..., None]) -> None:
    insecure = [f"{h}:{p}" for h, p in (cfg.node(node_id).peer, cfg.node(node_id).client) if not is_loopback(h)]
    if cfg.tls is None and insecure:
        print(
            f"raftproc.node: WARNING: node {node_id} listens on {', '.join(insecure)} WITHOUT TLS: anyone who reaches "
            "these ports can read and write every key and rewrite the cluster. Add a [tls] table (docs/operations.md, Security).",
            file=sys.stderr,
        )
        log("insecure_transport", level="warning", addresses=insecure)


class RaftState:
    """The (term, role) a log line carries: the node's own once its host is open."""

    def __init__(self) -> None:
        self.host: NodeHost | None = None

    def __call__(self) -> tuple[int, str]:
        return (self.host.raft.current_term, self.host.raft.role) if self.host else (0, "starting")


def open_node(cfg: ClusterConfig, node_id: int, log: Callable[..., None], link_faults: LinkFaults) -> NodeHost:
    """Recover the node from its data directory and listen; Exit says why it cannot."""
    from raftproc.server.host import open_host  # after logging is configured

    try:
        return open_host(cfg, node_id, log=log, link_faults=link_faults, clock=clock_for(node_id))
    except WalCorruption as e:
        log("wal_corrupt", level="error", error=str(e))
        raise Exit(EXIT_CORRUPT, f"refusing to start: write-ahead log is corrupt: {e}") from None
    except TlsError as e:
        log("tls_refused", level="error", error=str(e))
        raise Exit(EXIT_CONFIG, str(e)) from None
    except IdentityError as e:
        log("identity_refused", level="error", error=str(e))
        raise Exit(EXIT_CORRUPT, f"refusing to start: {e}") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise Exit(EXIT_STARTUP, f"node {node_id}: address already in use ({e.strerror}); is another node running?") from None
        raise Exit(EXIT_STARTUP, f"node {node_id}: cannot start: {e}") from None


def started_line(cfg: ClusterConfig, node_id: int) -> str:
    """The one line a started node prints: where it listens, and where it logs."""
    me = cfg.node(node_id)
    metrics = _address(me.metrics) if me.metrics else "nowhere (no metrics address)"
    return (
        f"raftproc.node: node {node_id} listens for peers on {_address(me.peer)}, clients on {_address(me.client)}, "
        f"metrics on {metrics}{f', Redis clients on {_address(me.redis)}' if me.redis else ''}; it logs to {cfg.node_log_file(node_id).resolve()}"
    )


def say_started(line: str) -> None:
    # Flushed: under the supervisor stdout is a file, and a node killed later would
    # lose the line. A courtesy only: a closed stdout must not stop a node.
    try:
        print(line, flush=True)
    except OSError:
        pass


def _address(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def serve(host: NodeHost, node_id: int, log: Callable[..., None]) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the TLS files."""

    def shutdown(signum: int, frame: object) -> None:
        log("shutdown_requested", signal=signal.Signals(signum).name)
        host.stop()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    # The reload runs on the loop thread, between passes.
    reload_tls = host.loop.make_waker(host.reload_tls)
    signal.signal(signal.SIGHUP, lambda signum, frame: reload_tls())
    try:
        host.run()
    except SyncFailed as e:
        # Retrying could report durable what the kernel already dropped; a restart
        # recovers from what the disk really holds.
        log("wal_sync_failed", level="error", error=str(e))
        raise Exit(
            EXIT_DISK,
            f"node {node_id} stopped: {e}. After a failed fsync nothing written since the last good one "
            "can be trusted; check the disk, then start the node again (it recovers from what is on disk).",
        ) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raftproc-node", description="Run one raftproc server (or: python -m raftproc.node).")
    p.add_argument("--id", type=int, required=True, help="this node's id in the cluster config")
    p.add_argument("--config", help="cluster TOML (default: built-in local 5-node cluster)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="overrides the config")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="wipe this node's data directory and come back as a new incarnation that waits to be added "
        "(after `member remove ID`; then `member add ID ...`: docs/storage.md)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the node can reload; never a reason to die
    try:
        run(args)
    except Exit as e:
        print(f"raftproc.node: {e.message}", file=sys.stderr)
        return e.code
    return 0


def run(args: argparse.Namespace) -> None:
    """The node's life, step by step; a step that cannot go on raises Exit."""
    try:
        cfg, link_faults = checked_config(args.config, args.id)
    except ConfigError as e:
        raise Exit(EXIT_CONFIG, str(e)) from None
    try:
        # Before the log file is opened or the WAL read: a second copy of this node
        # must touch neither. The descriptor stays open (and locked) until exit.
        data_dir_lock = claim_data_dir(cfg, args.id, rebuild=args.rebuild)  # noqa: F841 (held open until exit)
    except DataDirInUse as e:
        raise Exit(EXIT_STARTUP, f"node {args.id}: {e}") from None
    raft_state = RaftState()
    log = configure(args.id, cfg.node_log_file(args.id), args.log_level or cfg.log_level, state=raft_state)
    warn_if_insecure(cfg, args.id, log)
    raft_state.host = host = open_node(cfg, args.id, log, link_faults)
    say_started(started_line(cfg, args.id))
    serve(host, args.id, log)


if __name__ == "__main__":
    sys.exit(main())
