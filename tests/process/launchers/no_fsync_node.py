"""A node launcher for tests: the WAL's sync is planted out, so (in power-loss mode)
nothing it writes ever reaches the disk. Used by test_chaos.py; never shipped."""

# The planted bug replaces a method, which a compiled class does not allow: this
# node runs the pure build (the same source). It plants a bug for the chaos checker
# to find; the crash tests (crash_after_fsync.py, crash_at_failpoint.py) run
# whichever build the checkout has.
import os

os.environ["RAFTPROC_PURE"] = "1"

import sys

from raftproc.runtime import wal

wal.WriteAheadLog._sync_locked = lambda self: None

from raftproc.node import main  # noqa: E402

sys.exit(main())
