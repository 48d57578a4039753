"""Linearizability checking of recorded client histories (see linearizability.py)."""

from raftproc.checker.linearizability import CheckResult, Operation, check_history, load_history

__all__ = ["CheckResult", "Operation", "check_history", "load_history"]
