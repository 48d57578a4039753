"""One process per data directory.

Two processes that both believe they are node 3 would recover the same WAL, append
to it and vote twice in one term: Raft's safety rests on each node being one
process with one disk. A node therefore takes an exclusive advisory lock
(flock) on `LOCK` in its data directory before it reads anything there, and holds
it for its whole life. The kernel drops the lock when the process ends however it
ends (kill -9 included), so a crashed node never leaves a stale lock behind; a
paused one keeps it, as it should. The file holds the holder's pid so the refusal
can name it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "LOCK"


class DataDirInUse(Exception):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"data directory {path} is in use by {holder}: is this node already running?")


def lock_data_dir(path: Path) -> int:
    """Lock `path` for this process and return the lock's file descriptor, which
    must stay open for as long as the process uses the directory."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise DataDirInUse(path, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holder_of(path: Path) -> int | None:
    """The pid that holds `path`'s lock now, or None when nobody does."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
