"""RESP, the Redis serialization protocol, both ways: requests in, replies out.

Requests (https://redis.io/docs/reference/protocol-spec/) come as an array of bulk
strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nx\\r\\n`) or as an inline line
(`PING\\r\\n`, which redis-benchmark and telnet send). `RequestParser.feed` takes
bytes as the socket gives them and returns the whole commands they complete, each a
list of byte strings.

Every byte is hostile until parsed: counts and lengths are bounded before anything
is allocated for them (a `*2000000000` header allocates nothing), a header line
must end within a few bytes, an inline line within MAX_INLINE_BYTES, and one
command's bytes within `max_request_bytes`. What breaks a rule raises RespError,
whose text is what Redis would answer (`Protocol error: ...`). `feed` does not raise
it: it returns the commands that came whole before the fault, then the RespError,
so the connection can answer those first, then the error, then close; the parser
takes nothing after it. Each argument also counts ARG_OVERHEAD bytes against the
limit, for what holding it costs beyond its bytes. The parser keeps its place inside a partly received command, so a
command that trickles in byte by byte is still read in linear time.

Replies are Python values: None (a null), int, bytes or str (a bulk string), list
(an array), Map (a RESP3 map; a flat array under RESP2), and the two small maps the
key-value store answers with (raftproc.kv.redis): {"status": text} (a simple
string, +OK) and {"error": text} (an error reply, -ERR ...). `encode_reply` writes one.
"""

from __future__ import annotations

from typing import Any

from raftproc.kv.redis import ARG_OVERHEAD  # one count for the parser and the leader's check
from raftproc.runtime.framing import FrameError

MAX_INLINE_BYTES = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE
MAX_HEADER_BYTES = 32  # "*" or "$", up to 20 digits, "\r\n": more is not a header
CRLF = b"\r\n"


class RespError(FrameError):
    """A request that breaks the protocol: the connection answers it and closes."""


class RequestParser:
    def __init__(self, max_request_bytes: int, max_args: int) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_args = max_args
        self._buf = bytearray()
        self._pos = 0  # where parsing resumes in _buf
        self._args: list[bytes] | None = None  # the command being read, None between commands
        self._expected = 0  # how many arguments it has
        self._size = 0  # its bytes so far
        self.failed: RespError | None = None  # once set, nothing more is read

    @property
    def buffered(self) -> int:
        """Bytes of a command begun but not finished."""
        return len(self._buf) - self._pos + self._size

    def feed(self, data: bytes) -> list[list[bytes] | RespError]:
        """The commands `data` completes, in order, and a RespError last if it broke the protocol."""
        if self.failed is not None:
            return []
        self._buf += data
        commands: list[list[bytes] | RespError] = []
        try:
            while True:
                command = self._next()
                if command is None:
                    break
                if command:
                    commands.append(command)
        except RespError as e:
            self.failed = e
            self._buf.clear()
            self._args = None
            self._pos = self._size = 0
            commands.append(e)
            return commands
        del self._buf[: self._pos]
        self._pos = 0
        return commands

    def _next(self) -> list[bytes] | None:
        """The next whole command ([] for an empty inline line), or None for not yet."""
        if self._args is None:
            if self._pos >= len(self._buf):
                return None
            if self._buf[self._pos] != ord("*"):
                return self._inline()
            count = self._header(b"*", "multibulk")
            if count is None:
                return None
            if count <= 0:
                return []
            if count > self.max_args:
                raise RespError(f"Protocol error: {count} arguments is over the limit of {self.max_args}")
            self._args, self._expected, self._size = [], count, 0
        args = self._args
        while len(args) < self._expected:
            arg = self._bulk()
            if arg is None:
                return None
            args.append(arg)
        self._args = None
        self._size = 0
        return args

    def _header(self, kind: bytes, what: str) -> int | None:
        """A `*<n>` or `$<n>` line, its number, or None when the line is not all here."""
        buf, pos = self._buf, self._pos
        end = buf.find(CRLF, pos, pos + MAX_HEADER_BYTES)
        if end < 0:
            if len(buf) - pos >= MAX_HEADER_BYTES:
                raise RespError(f"Protocol error: invalid {what} length")
            return None
        if buf[pos] != kind[0]:
            raise RespError(f"Protocol error: expected '{kind.decode()}', got '{chr(buf[pos]) if 32 < buf[pos] < 127 else '?'}'")
        digits = bytes(buf[pos + 1 : end])
        if not _is_integer(digits):
            raise RespError(f"Protocol error: invalid {what} length")
        self._pos = end + 2
        return int(digits)

    def _bulk(self) -> bytes | None:
        start = self._pos
        length = self._header(b"$", "bulk")
        if length is None:
            return None
        if length < 0:
            raise RespError("Protocol error: invalid bulk length")
        if length > self.max_request_bytes or self._size + length + ARG_OVERHEAD > self.max_request_bytes:
            raise RespError(f"Protocol error: a command of more than {self.max_request_bytes} bytes (max_request_bytes)")
        buf, pos = self._buf, self._pos
        if len(buf) - pos < length + 2:
            self._pos = start  # the header again once the whole argument is here
            return None
        if buf[pos + length : pos + length + 2] != CRLF:
            raise RespError("Protocol error: a bulk string is not followed by CRLF")
        self._pos = pos + length + 2
        self._size += length + ARG_OVERHEAD
        return bytes(buf[pos : pos + length])

    def _inline(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos, pos + MAX_INLINE_BYTES)
        if end < 0:
            if len(buf) - pos >= MAX_INLINE_BYTES:
                raise RespError("Protocol error: too big inline request")
            return None
        self._pos = end + 1
        args = bytes(buf[pos:end]).split()
        if len(args) > self.max_args or len(args) * ARG_OVERHEAD > self.max_request_bytes:
            raise RespError(f"Protocol error: {len(args)} arguments is over the limit of {self.max_args}")
        return args


def _is_integer(digits: bytes) -> bool:
    body = digits[1:] if digits[:1] == b"-" else digits
    return 0 < len(body) <= 19 and body.isdigit()


def encode_command(argv: list[bytes]) -> bytes:
    """A command as a client sends it: an array of bulk strings."""
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)


class Map(dict):
    """A reply that is a map: `%` under RESP3, a flat array of keys and values under RESP2."""


def encode_reply(reply: Any, resp3: bool = False) -> bytes:
    out = bytearray()
    _encode(reply, resp3, out)
    return bytes(out)


def _encode(reply: Any, resp3: bool, out: bytearray) -> None:
    if isinstance(reply, bytes):
        out += b"$%d\r\n" % len(reply)
        out += reply
        out += CRLF
    elif isinstance(reply, str):
        _encode(reply.encode(), resp3, out)
    elif reply is None:
        out += b"_\r\n" if resp3 else b"$-1\r\n"
    elif isinstance(reply, bool):  # before int: True is an int too
        out += (b"#t\r\n" if reply else b"#f\r\n") if resp3 else (b":1\r\n" if reply else b":0\r\n")
    elif isinstance(reply, int):
        out += b":%d\r\n" % reply
    elif isinstance(reply, (list, tuple)):
        out += b"*%d\r\n" % len(reply)
        for item in reply:
            _encode(item, resp3, out)
    elif isinstance(reply, Map):
        out += (b"%%%d\r\n" if resp3 else b"*%d\r\n") % (len(reply) if resp3 else 2 * len(reply))
        for key, value in reply.items():
            _encode(key, resp3, out)
            _encode(value, resp3, out)
    elif isinstance(reply, dict) and "status" in reply:
        out += b"+" + _line(reply["status"]) + CRLF
    elif isinstance(reply, dict) and "error" in reply:
        out += b"-" + _line(reply["error"]) + CRLF
    else:
        raise TypeError(f"no RESP form for {type(reply).__name__}")


def _line(text: str) -> bytes:
    """A simple string or error is one line: a CR or LF inside would end it early and
    leave the rest to be read as the next reply."""
    return text.encode(errors="replace").replace(b"\r", b" ").replace(b"\n", b" ")
