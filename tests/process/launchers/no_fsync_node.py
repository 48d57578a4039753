"""A node launcher for tests: the WAL's sync is planted out, so (in power-loss mode)
nothing it writes ever reaches the disk. Used by test_chaos.py; never shipped."""

import sys

from raftproc.runtime import wal

wal.WriteAheadLog._sync_locked = lambda self: None

from raftproc.node import main  # noqa: E402

sys.exit(main())
