"""Servers for the peer systems the benchmark compares against. They run in the
benchmark's own virtualenvs, never as part of raftproc."""
