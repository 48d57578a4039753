"""raftproc: a Raft-replicated key-value store, one OS process per server."""

from raftproc import build

__version__ = "0.1.0"

# Before any other raftproc module is imported: the compiled build or the pure one.
build.choose()
