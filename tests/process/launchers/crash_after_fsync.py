"""A node launcher for tests: a node that SIGKILLs itself right after the WAL
fdatasync of any Ready whose entries contain RAFTPROC_TEST_CRASH_MARKER, before it
answers anything, if its id is the one written in the file RAFTPROC_TEST_CRASH_FILE
names (the test writes the leader's id there once it knows it). Used by
test_crash_points.py; never shipped."""

# These launchers plant their failure by replacing functions and methods, which a
# compiled module does not allow: the node runs the pure build (the same source; the
# compiled build's own tests run everything else).
import os

os.environ["RAFTPROC_PURE"] = "1"

import signal
import sys

from raftproc.runtime import wal

MARKER = os.environ["RAFTPROC_TEST_CRASH_MARKER"].encode()
WHO = os.environ["RAFTPROC_TEST_CRASH_FILE"]
ME = sys.argv[sys.argv.index("--id") + 1]
_write = wal.WriteAheadLog.write
_sync = wal.WriteAheadLog.sync
marked = False


def write_and_remember(self, rd):
    global marked
    if any(e.command and MARKER in e.command for e in rd.entries):
        marked = True
    return _write(self, rd)


def sync_then_die(self):
    covers_marker = marked  # the sync covers every write made before it starts
    _sync(self)
    if covers_marker:
        with open(WHO) as f:
            if f.read().strip() == ME:
                os.kill(os.getpid(), signal.SIGKILL)


wal.WriteAheadLog.write = write_and_remember
wal.WriteAheadLog.sync = sync_then_die

from raftproc.node import main  # noqa: E402

sys.exit(main())
