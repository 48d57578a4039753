"""Storage corruption on purpose, for chaos and tests: what a disk that lies does.

Only ever applied to a stopped node's data directory. A flipped bit in a complete
WAL record is corruption, never a torn tail (raftproc.runtime.wal): the node must
refuse to start, naming the file and offset, and lose nothing else.
"""

from __future__ import annotations

import random
from pathlib import Path

from raftproc.runtime.wal import HEADER


def corrupt_wal(data_dir: Path, rng: random.Random) -> str:
    """Flip one bit inside the body of the first record of a WAL segment that holds
    at least two records; returns what was done, for the record of the run."""
    for seg in sorted(data_dir.glob("wal-*.log")):
        data = bytearray(seg.read_bytes())
        if len(data) < 2 * HEADER.size + 2:
            continue
        length, _ = HEADER.unpack_from(data, 0)
        if length < 1 or HEADER.size + length + HEADER.size > len(data):
            continue  # a single (or torn) record: flipping it could read as a torn tail
        offset = HEADER.size + rng.randrange(length)
        data[offset] ^= 1 << rng.randrange(8)
        seg.write_bytes(bytes(data))
        return f"flipped a bit at offset {offset} of {seg.name}"
    raise FileNotFoundError(f"{data_dir}: no WAL segment with two records to corrupt")
