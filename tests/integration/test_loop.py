"""The event loop's connection: frames survive partial sends, a full queue refuses
more instead of growing, write interest is held only while bytes wait; and the
redial backoff grows, jitters and resets."""

from __future__ import annotations

import os
import random
import selectors
import socket

from support import run_loop_until

from raftproc.runtime.framing import encode_frame
from raftproc.runtime.loop import Backoff, Connection, EventLoop


def _pair(loop: EventLoop, *, max_buffer: int = 1 << 20):
    a, b = socket.socketpair()
    # A small kernel buffer makes one send() take only part of what is queued.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    got: list[bytes] = []
    closed: list[str] = []
    events: list[str] = []
    log = lambda event, **f: events.append(event)  # noqa: E731
    sender = Connection(
        loop,
        a,
        name="a",
        on_frame=lambda c, body: None,
        on_close=lambda c, r: closed.append(r),
        max_frame=1 << 20,
        max_buffer=max_buffer,
        log=log,
    )
    receiver = Connection(
        loop,
        b,
        name="b",
        on_frame=lambda c, body: got.append(body),
        on_close=lambda c, r: closed.append(r),
        max_frame=1 << 20,
        max_buffer=max_buffer,
        log=log,
    )
    return sender, receiver, got, closed


def test_connection_delivers_every_frame_in_order_across_partial_sends():
    loop = EventLoop()
    sender, _, got, closed = _pair(loop)
    frames = [bytes([i % 251]) * (1000 + i) for i in range(300)]  # ~450 KB, far past the socket buffers
    for f in frames:
        assert sender.send(f)
    sender.flush()
    assert sender.out, "one send() cannot take it all: the rest waits"
    assert sender._events & selectors.EVENT_WRITE, "write interest while bytes wait"
    for _ in range(10_000):
        if len(got) == len(frames):
            break
        loop.run_once(max_wait=0.1)
    assert got == frames and not closed
    assert not sender.out and not sender._events & selectors.EVENT_WRITE, "no write interest once drained"
    loop.close()


def test_connection_refuses_frames_past_its_buffer_instead_of_growing():
    loop = EventLoop()
    sender, _, _, _ = _pair(loop, max_buffer=64 * 1024)
    accepted = sum(sender.send(b"x" * 1000) for _ in range(200))  # never flushed
    assert 60 <= accepted < 200
    assert len(sender.out) <= 64 * 1024 + 1004
    loop.close()


def test_connection_closed_refuses_sends():
    loop = EventLoop()
    sender, _, _, closed = _pair(loop)
    sender.close("test")
    assert closed == ["test"] and sender.send(b"x") is False
    loop.close()


def test_backoff_doubles_with_equal_jitter_up_to_its_cap_and_resets():
    b = Backoff(random.Random(7), base=0.02, cap=1.0)
    delays = [b.next_delay() for _ in range(10)]
    for attempt, d in enumerate(delays):
        ceiling = min(1.0, 0.02 * 2**attempt)
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 1.0 and delays[-1] >= 0.5
    b.reset()
    assert 0.01 <= b.next_delay() <= 0.02


def test_a_frame_whose_handler_raises_costs_its_connection_not_the_loop():
    loop = EventLoop()
    a, b = socket.socketpair()
    events: list[tuple[str, dict]] = []
    closed: list[str] = []

    def explode(conn, body):
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion" + "9" * 5000)

    Connection(
        loop,
        b,
        name="victim",
        on_frame=explode,
        on_close=lambda c, r: closed.append(r),
        max_frame=1 << 20,
        max_buffer=1 << 20,
        log=lambda event, **f: events.append((event, f)),
    )
    a.sendall(encode_frame(b"\xff" * 100))
    for _ in range(100):
        if closed:
            break
        loop.run_once(max_wait=0.05)
    assert closed == ["bad frame"]
    ((event, fields),) = events
    assert event == "bad_frame" and fields["level"] == "error"
    assert len(fields["error"]) <= 200 and fields["excerpt"] == "ff" * 32 and fields["bytes"] == 100
    a.close()
    loop.close()


def test_listener_out_of_descriptors_pauses_instead_of_spinning():
    """With no descriptor left, accept() fails while the listening socket stays
    readable: the listener stops watching it for a while (no busy loop), logs once,
    and accepts the waiting connection once descriptors are back."""
    import resource
    import time

    from raftproc.runtime.loop import Listener

    loop = EventLoop()
    events: list[str] = []
    accepted: list[socket.socket] = []
    listener = Listener(loop, ("127.0.0.1", 0), lambda sock, addr: accepted.append(sock), log=lambda event, **f: events.append(event))
    client = socket.socket()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hog: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
        try:
            while True:
                hog.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        client.connect(listener.sock.getsockname())  # the server's accept() now has no descriptor
        cpu = time.thread_time()  # this thread: the loop runs here, and threads other tests left in this worker do not count
        passes = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            loop.run_once(max_wait=0.05)
            passes += 1
        assert events == ["accept_paused"] and not accepted
        assert passes < 200, f"{passes} passes in 0.5 s: the loop spins"
        assert time.thread_time() - cpu < 0.3
    finally:
        for fd in hog:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    run_loop_until(loop, lambda: accepted, 5, "the waiting connection to be accepted")
    assert len(accepted) == 1
    for s in accepted + [client]:
        s.close()
    listener.close()
    loop.close()


def test_sparse_log_writes_the_first_twenty_then_powers_of_ten():
    from raftproc.runtime.logging import SparseLog

    lines: list[tuple[str, dict]] = []
    sparse = SparseLog(lambda event, **f: lines.append((event, f)))
    for _ in range(100_000):
        sparse("frame_error", conn="c")
    sparse("connection_idle_closed")
    counts = [f["occurrences"] for e, f in lines if e == "frame_error"]
    assert counts == list(range(1, 21)) + [100, 1000, 10_000, 100_000]
    assert lines[-1] == ("connection_idle_closed", {"occurrences": 1})
