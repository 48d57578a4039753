"""A node launcher for tests: a node that SIGKILLs itself right after the WAL
fdatasync of any Ready whose entries contain RAFTPROC_TEST_CRASH_MARKER, before it
answers anything, if its id is the one written in the file RAFTPROC_TEST_CRASH_FILE
names (the test writes the leader's id there once it knows it). Used by
test_crash_points.py; never shipped."""

import os
import signal
import sys

from raftproc.runtime import wal

MARKER = os.environ["RAFTPROC_TEST_CRASH_MARKER"].encode()
WHO = os.environ["RAFTPROC_TEST_CRASH_FILE"]
ME = sys.argv[sys.argv.index("--id") + 1]
marked = False  # a record with the marker has been written
covers_marker = False  # the fdatasync under way covers it


def at(step: str, rd: object) -> None:
    global marked, covers_marker
    if step == "wal_written":
        marked = marked or any(e.command and MARKER in e.command for e in rd.entries)  # type: ignore[attr-defined]
    elif step == "wal_syncing":
        covers_marker = marked  # a sync covers every write made before it starts
    elif step == "wal_synced" and covers_marker:
        with open(WHO) as f:
            if f.read().strip() == ME:
                os.kill(os.getpid(), signal.SIGKILL)


wal.failpoint_hook = at

from raftproc.node import main  # noqa: E402

sys.exit(main())
