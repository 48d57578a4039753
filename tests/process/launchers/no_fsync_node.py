"""A node launcher for tests: the WAL's sync is planted out, so (in power-loss mode)
nothing it writes ever reaches the disk. Used by test_chaos.py; never shipped."""

# These launchers plant their failure by replacing functions and methods, which a
# compiled module does not allow: the node runs the pure build (the same source; the
# compiled build's own tests run everything else).
import os

os.environ["RAFTPROC_PURE"] = "1"

import sys

from raftproc.runtime import wal

wal.WriteAheadLog._sync_locked = lambda self: None

from raftproc.node import main  # noqa: E402

sys.exit(main())
