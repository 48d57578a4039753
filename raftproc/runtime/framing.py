"""Length-prefixed frames: a 4-byte big-endian unsigned length, then that many bytes.

The decoder is sans-IO (h11-style): feed it whatever `recv` returned, in any split
or merge, and it hands back complete bodies. A declared length above `max_frame`
is refused from the header alone: the claimed size is never allocated.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class FrameError(Exception):
    """The peer sent something that is not a frame we accept."""


class Decoder(Protocol):
    """What a connection feeds received bytes to: FrameDecoder, or another protocol's
    parser (raftproc.runtime.resp), which raises FrameError for what it refuses."""

    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> list[Any]: ...


def encode_frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every body now complete, in order."""
        buf = self._buf
        buf += data
        bodies: list[bytes] = []
        pos = 0
        end = len(buf)
        # Bodies are cut through a view: one copy each (a bytearray slice would be two).
        with memoryview(buf) as view:
            while end - pos >= 4:
                (size,) = HEADER.unpack_from(buf, pos)
                if size > self.max_frame:
                    raise FrameError(f"frame of {size} bytes exceeds the {self.max_frame}-byte limit")
                if end - pos - 4 < size:
                    break
                bodies.append(view[pos + 4 : pos + 4 + size].tobytes())
                pos += 4 + size
        if pos:
            del buf[:pos]
        return bodies

    @property
    def buffered(self) -> int:
        return len(self._buf)
