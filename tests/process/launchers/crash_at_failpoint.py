"""A node launcher for tests: the first node process to reach the snapshot step
named by RAFTPROC_TEST_FAILPOINT SIGKILLs itself there, after writing its id to
the file RAFTPROC_TEST_FAILPOINT_FIRED (which also keeps it from firing twice).
Used by test_snapshots.py; never shipped."""

import os
import signal
import sys

from raftproc.runtime import snapshot

STEP = os.environ["RAFTPROC_TEST_FAILPOINT"]
FIRED = os.environ["RAFTPROC_TEST_FAILPOINT_FIRED"]
ME = sys.argv[sys.argv.index("--id") + 1]


def die_at(step: str) -> None:
    if step != STEP:
        return
    # The id is written whole before the file appears under its name (a hard link
    # fails if the name exists): a test that sees the file never reads it empty.
    draft = f"{FIRED}.{os.getpid()}"
    with open(draft, "w") as f:
        f.write(ME)
    try:
        os.link(draft, FIRED)
    except FileExistsError:
        return
    finally:
        os.unlink(draft)
    os.kill(os.getpid(), signal.SIGKILL)


snapshot.failpoint_hook = die_at

from raftproc.node import main  # noqa: E402

sys.exit(main())
