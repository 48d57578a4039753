"""The few CBOR shapes every write crosses, read and written by our own code when
this module runs compiled: a client's plain write request, a command (an array of
six), the answer "ok", and the run of entries that ends an AppendEntries.

cbor2 reads a request into a map of fresh key strings that a dozen lookups then
check, a command into a list that then becomes a Command, entries into a list of
lists that then become Entry objects. Compiled by mypyc, a reader with a position
makes the objects straight from the bytes (a key is compared as a number made of
its bytes, never made into a string), with a fraction of the allocations, which
are most of the cost. Run by the interpreter the same reader is several times
slower than cbor2. So, as aiohttp ships its C parser beside a pure one, the write
path asks `COMPILED` and takes these functions only in the compiled build; the
pure build keeps cbor2.

The contract that makes two ways safe: a function here either returns exactly
what cbor2 gives for the same bytes (or the bytes cbor2.dumps makes for the same
value), or raises Unhandled, and the caller then asks cbor2. So anything unusual
(tags, floats, indefinite lengths, nesting beyond the expected shape, invalid
UTF-8, truncation) reaches cbor2, whose verdict stands. tests/unit/test_cbor.py
holds both to that, on valid and on broken input, in either build.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any, Final

# True when this module is the compiled extension (the test raftproc.build makes).
COMPILED: Final = __file__.endswith(tuple(EXTENSION_SUFFIXES))


class Unhandled(Exception):
    """Not a shape this module reads or writes: ask cbor2."""


# Major types, as Reader.head and put_head take them (the top three bits of an item).
UINT: Final = 0
NEGINT: Final = 1
BYTES: Final = 2
TEXT: Final = 3
ARRAY: Final = 4
MAP: Final = 5


class Reader:
    """Items read one by one from the front of `data`."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def _take(self, n: int) -> int:
        """Where the next `n` bytes start; the reader moves past them. Every length
        read from the bytes is checked here, before anything is made from it."""
        start = self.pos
        if n > len(self.data) - start:
            raise Unhandled  # cut short
        self.pos = start + n
        return start

    def initial(self) -> int:
        if self.pos >= len(self.data):
            raise Unhandled
        byte = self.data[self.pos]
        self.pos += 1
        return byte

    def argument(self, info: int) -> int:
        """The count or value that follows an initial byte's low five bits. Only its
        shortest form: cbor2 reads the others, and what this reader accepts it also
        writes byte for byte (a follower's log keeps the entry bytes it received)."""
        if info < 24:
            return info
        if info == 24:
            size, least = 1, 24
        elif info == 25:
            size, least = 2, 0x100
        elif info == 26:
            size, least = 4, 0x10000
        elif info == 27:
            size, least = 8, 0x100000000
        else:
            raise Unhandled  # indefinite length, or reserved
        data, start = self.data, self._take(size)
        # By the byte, not int.from_bytes: compiled, this makes no slice and no object.
        n = 0
        for i in range(start, start + size):
            n = (n << 8) | data[i]
        if n < least:
            raise Unhandled
        return n

    def head(self, major: int) -> int:
        """The argument of an item that must be of `major` type."""
        initial = self.initial()
        if initial >> 5 != major:
            raise Unhandled
        return self.argument(initial & 31)

    def _string(self, n: int) -> bytes:
        start = self._take(n)
        return self.data[start : start + n]

    def _text(self, n: int) -> str:
        start = self._take(n)
        try:
            if n <= 256:
                return self.data[start : start + n].decode()
            # Decoded where it lies: a slice would copy a large value once more.
            return str(memoryview(self.data)[start : start + n], "utf-8")
        except UnicodeDecodeError:
            raise Unhandled from None

    def text(self) -> str:
        return self._text(self.head(TEXT))

    def short_text(self) -> int:
        """A text of at most seven bytes as a number (see short_text_code), compared
        with a constant to name a key or a tag without making a string."""
        n = self.head(TEXT)
        if n > 7:
            raise Unhandled
        data, start = self.data, self._take(n)
        code = n
        for i in range(start, start + n):
            code = (code << 8) | data[i]
        return code

    def uint(self) -> int:
        return self.head(UINT)

    def bytes_or_null(self) -> bytes | None:
        if self.pos < len(self.data) and self.data[self.pos] == 0xF6:
            self.pos += 1
            return None
        return self._string(self.head(BYTES))

    def scalar(self) -> Any:
        """An unsigned or negative integer, a text or byte string, true, false or null."""
        initial = self.initial()
        major = initial >> 5
        if major == 7:
            if initial == 0xF6:
                return None
            if initial == 0xF5:
                return True
            if initial == 0xF4:
                return False
            raise Unhandled  # floats, undefined, other simple values
        if major > TEXT:
            raise Unhandled  # arrays, maps, tags
        n = self.argument(initial & 31)
        if major == UINT:
            return n
        if major == NEGINT:
            return -1 - n
        return self._string(n) if major == BYTES else self._text(n)

    def text_bytes_or_null(self) -> str | bytes | None:
        value = self.scalar()
        if value is None or isinstance(value, (str, bytes)):
            return value
        raise Unhandled

    def count(self, major: int) -> int:
        """An array's or a map's number of items, each of which takes a byte at least
        (so a claimed count beyond the bytes left is no reason to allocate)."""
        n = self.head(major)
        if n > len(self.data) - self.pos:
            raise Unhandled
        return n


def short_text_code(text: str) -> int:
    """What Reader.short_text reads for `text`: its length, then its UTF-8 bytes,
    as one number (the length tells "a" from "\\0a")."""
    data = text.encode()
    assert len(data) <= 7, "seven bytes at most"
    return int.from_bytes(bytes([len(data)]) + data, "big")


def map_prefix(r: Reader) -> tuple[dict[str, Any], str | None, int]:
    """A map of text keys, read while its values are scalars: the pairs read, the key
    of the first value that is an array or a map (None if none was; the reader is
    left at that value) and the number of pairs after that one."""
    n = r.count(MAP)
    body: dict[str, Any] = {}
    data = r.data
    for i in range(n):
        key = r.text()
        if r.pos < len(data) and data[r.pos] >> 5 in (ARRAY, MAP):
            return body, key, n - i - 1
        body[key] = r.scalar()
    return body, None, 0


# --- writing ------------------------------------------------------------------------
# Items are written as pieces appended to a list, joined once at the end: no piece is
# copied twice, and every one-byte piece is one of _BYTE's, made once.

_BYTE: Final = [bytes((i,)) for i in range(256)]


def put_head(out: list[bytes], major: int, n: int) -> None:
    """An item's head: its major type and its argument `n`, in the shortest form, as
    cbor2 writes it."""
    top = major << 5
    if n < 24:
        out.append(_BYTE[top | n])
    elif n < 0x100:
        out.append(_BYTE[top | 24])
        out.append(_BYTE[n])
    elif n < 0x10000:
        out.append(_BYTE[top | 25])
        out.append(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(_BYTE[top | 26])
        out.append(n.to_bytes(4, "big"))
    elif n < 0x10000000000000000:
        out.append(_BYTE[top | 27])
        out.append(n.to_bytes(8, "big"))
    else:
        raise Unhandled  # a bignum: cbor2 writes a tag


def put_uint(out: list[bytes], n: int) -> None:
    """Never given a bool (cbor2 writes those as simple values): compiled code would
    receive True as 1. Every caller passes a count (codec.is_count refuses bools)
    or a term or index."""
    if n < 0:
        raise Unhandled
    put_head(out, UINT, n)


def put_text(out: list[bytes], s: str) -> None:
    data = s.encode()
    put_head(out, TEXT, len(data))
    out.append(data)


def put_text_bytes_or_null(out: list[bytes], value: str | bytes | None) -> None:
    if isinstance(value, str):
        put_text(out, value)
    else:
        put_bytes_or_null(out, value)


def put_bytes_or_null(out: list[bytes], value: bytes | None) -> None:
    if value is None:
        out.append(b"\xf6")
    else:
        put_head(out, BYTES, len(value))
        out.append(value)
