"""Checking a history that does not fit in memory: one key at a time.

A long chaos run records millions of operations (raftproc.ops.workload streams them
to history.jsonl as they return). Linearizability is local (Herlihy & Wing), so
the file is split by key into a scratch directory, with buffers bounded in bytes,
and each key's sub-history is then loaded, checked and dropped in turn. Memory
holds one key's operations, not the run's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from raftproc.checker.linearizability import CheckResult, check_history

SPILL_BYTES = 32 * 1024 * 1024  # buffered lines, all keys together, before they go to disk


def split_by_key(history: Path, scratch: Path) -> dict[str, Path]:
    """Write each key's lines of `history` to a file of its own in `scratch` (emptied
    first: lines left by an earlier check must not join this one)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    files: dict[str, Path] = {}
    buffers: dict[str, list[str]] = {}
    held = 0

    def spill() -> None:
        for key, lines in buffers.items():
            with open(files[key], "a", encoding="utf-8") as f:
                f.writelines(lines)
        buffers.clear()

    with open(history, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            key = json.loads(line)["key"]
            if key not in files:
                files[key] = scratch / f"key-{len(files)}.jsonl"
            buffers.setdefault(key, []).append(line)
            held += len(line)
            if held > SPILL_BYTES:
                spill()
                held = 0
    spill()
    return files


def records_by_key(history: Path, scratch: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(key, that key's records), one key in memory at a time."""
    for key, path in split_by_key(history, scratch).items():
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        path.unlink()
        yield key, records


def check_history_file(
    history: Path,
    scratch: Path,
    *,
    visit: Callable[[str, list[dict[str, Any]]], None] | None = None,
) -> CheckResult:
    """check_history over a file, a key at a time; `visit(key, records)` sees each
    key's records too (the chaos run's lost-write check)."""
    total = CheckResult(ok=True, operations=0, keys=0, failures=[], undecided=[])
    for key, records in records_by_key(history, scratch):
        if visit is not None:
            visit(key, records)
        one = check_history(records)
        total.operations += one.operations
        total.keys += one.keys
        total.failures += one.failures
        total.undecided += one.undecided
        total.ok = total.ok and one.ok
    return total
