#!/usr/bin/env python3
"""`raftproc-supervisor` from a checkout: the code is raftproc.ops.supervisor."""

import sys

from raftproc.ops.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
