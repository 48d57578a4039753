"""Waiting in tests: on a condition, against a deadline, never a bare sleep.

`wait_until` polls something another process or thread changes; `run_loop_until`
drives an in-process event loop itself, pass by pass, until the condition holds.
Both fail with what they were waiting for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)  # poll interval of this wait-until loop


def run_loop_until(loop: Any, condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """`loop`: a raftproc.runtime.loop.EventLoop nobody else runs."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        loop.run_once(max_wait=0.01)
