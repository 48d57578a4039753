"""raftproc: a Raft-replicated key-value store, one OS process per server."""

__version__ = "0.1.0"
