"""One thread, one selector: the event loop and the framed connections it drives.

Each pass of the loop has three phases (after curio's kernel):

1. poll sockets, with a timeout equal to the next timer's deadline;
2. run every timer that is due;
3. run the `after_pass` hooks (the node handles its Ready here), then flush every
   connection that has bytes queued: one send() per connection per pass, so many
   messages queued in one pass leave in one system call.

Every socket is non-blocking. A connection registers EVENT_WRITE only while it has
bytes the kernel would not take yet; `sendall` is never used. Deadlines are on the
loop's clock (time.monotonic unless one is injected).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import random
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftproc.runtime.framing import HEADER, Decoder, FrameDecoder, FrameError
from raftproc.runtime.tls import Identity, TlsContexts, identity_of

RECV_BYTES = 256 * 1024

FrameHandler = Callable[["Connection", Any], None]  # a frame's body, or what the connection's decoder makes of the bytes
CloseHandler = Callable[["Connection", str], None]
Log = Callable[..., None]


class EventLoop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: seconds, never going back; every timer deadline is on it."""
        self.clock = clock
        self.sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._dirty: set[Connection] = set()
        self.after_pass: list[Callable[[], None]] = []
        self.running = False
        self._wakers: list[tuple[socket.socket, socket.socket]] = []

    def call_at(self, deadline: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (deadline, next(self._seq), fn))

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.call_at(self.clock() + delay, fn)

    def mark_dirty(self, conn: Connection) -> None:
        self._dirty.add(conn)

    def make_waker(self, handler: Callable[[], None]) -> Callable[[], None]:
        """A function any thread may call to have `handler` run on the loop thread
        (curio's trick: a socketpair the selector watches)."""
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)

        def on_wake(mask: int) -> None:
            try:
                while r.recv(4096):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
            handler()

        self.sel.register(r, selectors.EVENT_READ, on_wake)
        self._wakers.append((r, w))

        def wake() -> None:
            try:
                w.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # a wake-up is already pending

        return wake

    def flush_now(self) -> None:
        """Send what is queued at once, before a slow step (an fsync) in this pass."""
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            conn.flush()

    def run(self) -> None:
        self.running = True
        while self.running:
            self.run_once()

    def stop(self) -> None:
        self.running = False

    def run_once(self, max_wait: float = 1.0) -> None:
        timeout = max_wait
        if self._timers:
            timeout = min(max(self._timers[0][0] - self.clock(), 0.0), max_wait)
        if self._dirty:
            timeout = 0.0
        # Phase 1: IO.
        for key, mask in self.sel.select(timeout):
            key.data(mask)
        # Phase 2: timers due.
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()
        # Phase 3: work, then one flush per connection.
        for hook in self.after_pass:
            hook()
        self.flush_now()

    def close(self) -> None:
        for r, w in self._wakers:
            r.close()
            w.close()
        self.sel.close()


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """What every connection of one port shares: its bounds, the log that hears what
    remote parties do, and TLS (whose contexts a reload may replace, so they are
    read at each connect)."""

    max_frame: int  # bytes of one frame, either way
    max_buffer: int  # bytes queued to one connection
    handshake_timeout: float  # seconds for TLS and a first frame
    log: Log
    tls: TlsContexts | None = None

    def open(
        self,
        loop: EventLoop,
        sock: socket.socket,
        *,
        name: str,
        on_frame: FrameHandler,
        on_close: CloseHandler,
        on_connected: Callable[[Connection], None] | None = None,
        dialled: bool = False,
        decoder: Decoder | None = None,
    ) -> Connection:
        """A connection on `sock`: one this node `dialled` (still connecting), or one it accepted.
        `decoder`: another protocol than length-prefixed frames (raftproc.runtime.resp)."""
        tls = None if self.tls is None else self.tls.client if dialled else self.tls.server
        return Connection(
            loop,
            sock,
            name=name,
            on_frame=on_frame,
            on_close=on_close,
            max_frame=self.max_frame,
            max_buffer=self.max_buffer,
            log=self.log,
            connecting=dialled,
            on_connected=on_connected,
            tls=tls,
            server_side=not dialled,
            handshake_timeout=self.handshake_timeout,
            decoder=decoder,
        )


class Connection:
    """A framed, non-blocking TCP connection, in plaintext or in TLS.

    With `tls` (a context from raftproc.runtime.tls) the socket is wrapped once TCP
    is connected, and no frame moves until the handshake is done; it must finish
    within `handshake_timeout` seconds. Under TLS the two directions can need each
    other: a read may want the socket writable, a write may want it readable
    (`_read_wants_write`, `_write_wants_read` keep the selector's interest right),
    and bytes OpenSSL has already decrypted are invisible to select(), so every
    read drains `pending()` before it returns.
    """

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        *,
        name: str,
        on_frame: FrameHandler,
        on_close: CloseHandler,
        max_frame: int,
        max_buffer: int,
        log: Log,
        connecting: bool = False,
        on_connected: Callable[[Connection], None] | None = None,
        tls: ssl.SSLContext | None = None,
        server_side: bool = False,
        handshake_timeout: float = 5.0,
        decoder: Decoder | None = None,
    ) -> None:
        """`on_connected(conn)` runs once frames can flow: after the TCP connect, and
        after the handshake under TLS (`conn.identity` is then the peer's).
        `decoder` turns received bytes into what `on_frame` gets (length-prefixed
        frames by default)."""
        self.loop = loop
        self.sock: Any = sock  # a plain socket, or an ssl.SSLSocket once TLS wraps it
        self.name = name
        self.on_frame = on_frame
        self.on_close = on_close
        self.decoder: Decoder = decoder if decoder is not None else FrameDecoder(max_frame)
        self.paused = False  # not reading: the handler has enough work from this connection
        self.max_buffer = max_buffer
        self.log = log
        self.out = bytearray()
        self.closed = False
        self.last_frame_at = loop.clock()  # when the last whole frame arrived (or the connection opened)
        self.heard = False  # a whole frame has arrived
        self.connecting = connecting
        self._on_connected = on_connected
        self._tls = tls
        self._server_side = server_side
        self.handshaking = False
        self.identity: Identity | None = None  # who the peer's certificate names (TLS only)
        self._read_wants_write = False
        self._write_wants_read = False
        self._handshake_wants_write = False
        self._events = 0
        sock.setblocking(False)
        if tls is not None:
            loop.call_later(handshake_timeout, self._handshake_deadline)
            if not connecting:
                self._start_tls()
                if self.closed:
                    return
        loop.sel.register(self.sock, self._wanted_events(), self._on_event)
        self._events = self._wanted_events()

    def send(self, body: bytes) -> bool:
        """Queue one frame. Returns False (and drops it) when the queue is full or
        the connection is gone: Raft resends what matters."""
        if self.closed or len(self.out) > self.max_buffer:
            return False
        # Header and body straight into the queue: joining them first would copy
        # every body (a 16 KiB value, a 1 MiB snapshot chunk) once more.
        self.out += HEADER.pack(len(body))
        self.out += body
        self.loop.mark_dirty(self)
        return True

    def write(self, data: bytes) -> bool:
        """Queue bytes as they are, for a protocol without frames. False when the queue
        is full or the connection is gone: the caller decides, since for a stream a
        dropped reply cannot be resent."""
        if self.closed or len(self.out) > self.max_buffer:
            return False
        self.out += data
        self.loop.mark_dirty(self)
        return True

    def pause(self) -> None:
        """Stop reading until resume(): bytes wait in the kernel, and TCP slows the sender."""
        if not self.paused:
            self.paused = True
            self._update_events()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self._update_events()
            if self._tls is not None:
                self._read()  # OpenSSL may hold decrypted bytes that select() cannot see

    def flush(self) -> None:
        if self.closed or self.connecting or self.handshaking:
            return
        if self.out:
            self._write_wants_read = False
            try:
                if self._tls is None:
                    sent = self.sock.send(self.out)
                else:
                    # OpenSSL finishes a record it began only if the retry passes at
                    # least the same bytes: `out` only grows until a send succeeds.
                    sent = self.sock.send(self.out[:TLS_WRITE_BYTES])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                sent = 0
            except ssl.SSLWantReadError:
                sent = 0
                self._write_wants_read = True
            except OSError as e:  # ssl.SSLError included
                self.close(f"send failed: {describe_error(e)}")
                return
            del self.out[:sent]
        self._update_events()

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        _forget(self.loop, self.sock)
        self.on_close(self, reason)

    def _wanted_events(self) -> int:
        # Watch for writability only while it is needed; an idle writable socket
        # would wake the selector on every pass.
        write = (
            self.connecting
            or self._read_wants_write
            or (self.handshaking and self._handshake_wants_write)
            or (bool(self.out) and not self._write_wants_read and not self.handshaking)
        )
        read = 0 if self.paused else selectors.EVENT_READ
        return read | (selectors.EVENT_WRITE if write else 0)

    def _update_events(self) -> None:
        events = self._wanted_events()
        if events != self._events and not self.closed:
            self._events = events
            self.loop.sel.modify(self.sock, events, self._on_event)

    def _on_event(self, mask: int) -> None:
        if self.connecting:
            if not mask & selectors.EVENT_WRITE:
                return
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close(f"connect failed: {errno.errorcode.get(err, err)}")
                return
            self.connecting = False
            if self._tls is None:
                self._connected()
            else:
                self.loop.sel.unregister(self.sock)
                self._start_tls()
                self.loop.sel.register(self.sock, self._wanted_events(), self._on_event)
                self._events = self._wanted_events()
        if self.handshaking:
            self._handshake()
            if self.handshaking or self.closed:
                return
            mask |= selectors.EVENT_READ | selectors.EVENT_WRITE  # decrypted bytes may wait already
        if mask & selectors.EVENT_READ or self._read_wants_write:
            self._read()
        if not self.closed and (mask & selectors.EVENT_WRITE or self._write_wants_read):
            self.flush()

    # --- TLS ------------------------------------------------------------------------

    def _start_tls(self) -> None:
        assert self._tls is not None
        try:
            self.sock = self._tls.wrap_socket(self.sock, server_side=self._server_side, do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            self.closed = True
            self.sock.close()
            self.on_close(self, f"TLS set-up failed: {describe_error(e)}")
            return
        self.handshaking = True
        self._handshake_wants_write = not self._server_side  # a client speaks first

    def _handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._handshake_wants_write = False
            self._update_events()
            return
        except ssl.SSLWantWriteError:
            self._handshake_wants_write = True
            self._update_events()
            return
        except (OSError, ValueError) as e:  # ssl.SSLError included: no answer, just a close
            self.log("tls_handshake_failed", level="warning", conn=self.name, error=describe_error(e))
            self.close("TLS handshake failed")
            return
        self.handshaking = False
        self.identity = identity_of(self.sock.getpeercert())
        self._connected()
        if not self.closed:
            self._update_events()

    def _handshake_deadline(self) -> None:
        if not self.closed and (self.handshaking or self.connecting):
            self.log("tls_handshake_timeout", level="warning", conn=self.name)
            self.close("TLS handshake timed out")

    def _connected(self) -> None:
        if self._on_connected:
            self._on_connected(self)

    # --- reading --------------------------------------------------------------------

    def _recv(self) -> bytes | None:
        """What the socket has now (b"" at the end of the stream, None for nothing)."""
        if self._tls is None:
            try:
                return self.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return None
        self._read_wants_write = False
        chunks: list[bytes] = []
        size = 0
        try:
            while size < RECV_BYTES:
                data = self.sock.recv(RECV_BYTES)
                if not data:
                    return b"".join(chunks) if chunks else b""
                chunks.append(data)
                size += len(data)
                # A record is decrypted whole; what this recv did not take stays
                # inside the SSL object, where select() cannot see it.
                while self.sock.pending():
                    chunks.append(self.sock.recv(self.sock.pending()))
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLWantWriteError:
            self._read_wants_write = True
            self._update_events()
        return b"".join(chunks) if chunks else None

    def _read(self) -> None:
        if self.closed or self.connecting or self.handshaking or self.paused:
            return
        try:
            data = self._recv()
        except OSError as e:  # ssl.SSLError included
            self.close(f"recv failed: {describe_error(e)}")
            return
        if data is None:
            return
        if not data:
            if self.decoder.buffered:
                self.log(
                    "frame_error",
                    level="warning",
                    conn=self.name,
                    error=f"connection closed inside a frame ({self.decoder.buffered} bytes)",
                )
            self.close("closed by peer")
            return
        try:
            bodies = self.decoder.feed(data)
        except FrameError as e:
            self.log("frame_error", level="warning", conn=self.name, error=str(e))
            self.close("frame error")
            return
        if bodies:
            self.last_frame_at = self.loop.clock()
            self.heard = True
        for body in bodies:
            if self.closed:
                return
            try:
                self.on_frame(self, body)
            except Exception as e:
                # Whatever a frame provokes costs its connection, never the process.
                # Handlers turn the faults they expect into a frame_error themselves;
                # this is for the ones nobody foresaw.
                size = len(body) if isinstance(body, bytes) else None
                self.log("bad_frame", level="error", conn=self.name, error=describe_error(e), bytes=size, excerpt=excerpt(body))
                self.close("bad frame")
                return


TLS_WRITE_BYTES = 256 * 1024  # per SSL write: one copy of this much, not of the whole queue


def idle(connections, now: float, idle_seconds: float, first_frame_seconds: float) -> list[Connection]:
    """The connections to close: no whole frame for `idle_seconds`, or none at all
    within `first_frame_seconds` of opening (a TLS handshake or a first frame that
    never completes must not hold a slot for the whole idle timeout)."""
    return [c for c in connections if c.last_frame_at < now - (idle_seconds if c.heard else first_frame_seconds)]


EXCERPT_BYTES = 32


def excerpt(body: Any) -> str:
    """What a frame (bytes) or a decoded command (a list of them) began with, bounded."""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body[:EXCERPT_BYTES]).hex()
    if isinstance(body, list):
        return b" ".join(a[:EXCERPT_BYTES] for a in body[:4] if isinstance(a, bytes)).hex()[: 4 * EXCERPT_BYTES]
    return type(body).__name__


MAX_ERROR_CHARS = 200


def describe_error(e: BaseException) -> str:
    """An exception as a bounded line: its text may carry what the peer sent."""
    try:
        text = f"{type(e).__name__}: {e}"
    except Exception:  # e.g. an int too long to turn into text
        text = type(e).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class Listener:
    """Accepts connections on one address and hands each socket to `on_accept`.

    Out of file descriptors (EMFILE, ENFILE) the listening socket stays readable and
    a naive loop would spin on it: the listener then stops watching it for a while
    (100 ms, doubling to 2 s), so established connections keep being served."""

    PAUSE_MIN = 0.1
    PAUSE_MAX = 2.0

    def __init__(
        self, loop: EventLoop, address: tuple[str, int], on_accept: Callable[[socket.socket, tuple], None], *, log: Log | None = None
    ) -> None:
        self.loop = loop
        self.sock = socket.create_server(address, reuse_port=False, backlog=128)
        self.sock.setblocking(False)
        self.on_accept = on_accept
        self.log = log
        self.closed = False
        self._pause = 0.0  # the current pause after running out of descriptors; 0: not paused
        loop.sel.register(self.sock, selectors.EVENT_READ, self._on_event)

    def _on_event(self, mask: int) -> None:
        for _ in range(64):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(e)
                return
            self._pause = 0.0
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.on_accept(sock, addr)

    def _pause_accepting(self, e: OSError) -> None:
        first = self._pause == 0.0
        self._pause = min(self.PAUSE_MAX, self._pause * 2) if not first else self.PAUSE_MIN
        if self.log is not None and first:
            self.log("accept_paused", level="warning", error=errno.errorcode.get(e.errno or 0, str(e.errno)), seconds=self._pause)
        self.loop.sel.unregister(self.sock)
        self.loop.call_later(self._pause, self._resume)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.sel.register(self.sock, selectors.EVENT_READ, self._on_event)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _forget(self.loop, self.sock)


class Backoff:
    """Capped exponential backoff with equal jitter (the AWS architecture blog's
    name): each delay is drawn from [d/2, d] for d = base * 2**attempt, capped, so
    reconnect storms after a restart spread out while no retry comes too early."""

    def __init__(self, rng: random.Random, base: float = 0.02, cap: float = 1.0) -> None:
        self.rng = rng
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 16)
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def dial(address: tuple[str, int]) -> socket.socket:
    """A non-blocking socket connecting to `address`: whether it connected is known
    once it turns writable (Connection reads SO_ERROR then)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.connect(address)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        pass  # reported through SO_ERROR when the socket turns writable
    return sock


def _forget(loop: EventLoop, sock: socket.socket) -> None:
    """Stop watching a socket (if it is watched: a paused listener is not) and close it."""
    try:
        loop.sel.unregister(sock)
    except (KeyError, ValueError):
        pass
    sock.close()
