"""The node's side of injected link faults (raftproc.runtime.linkfaults): frames to a
cut peer are dropped, frames from one are ignored, frames to a slowed peer wait in a
queue of their own until their time comes.

A delayed frame keeps its place: each leaves no earlier than the one queued before
it, so lowering a delay never reorders a link (TCP would not either). What waits is
bounded in bytes per peer, as a connection's own buffer is; past the bound frames are
dropped, as on a congested network, and Raft resends what matters.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from raftproc.runtime.linkfaults import NO_FAULTS, LinkFaults
from raftproc.runtime.loop import EventLoop

Send = Callable[[bytes], bool]


class _Held:
    """Frames waiting to go to one peer: (due, frame, where it goes)."""

    def __init__(self) -> None:
        self.frames: deque[tuple[float, bytes, Send]] = deque()
        self.bytes = 0
        self.timer_at: float | None = None  # the release timer armed for this due time


class LinkShaper:
    def __init__(self, loop: EventLoop, max_held_bytes: int, faults: LinkFaults = NO_FAULTS) -> None:
        self.loop = loop
        self.max_held_bytes = max_held_bytes
        self.faults = faults
        self._delay: dict[int, float] = {}
        self._base = 0.0
        self._held: dict[int, _Held] = {}
        self.set(faults)

    def set(self, faults: LinkFaults) -> None:
        """Replace every fault at once. Frames already held keep their due time."""
        self.faults = faults
        self._delay = {peer: ms / 1000 for peer, ms in faults.delay_ms}
        self._base = faults.base_delay_ms / 1000

    def cut_to(self, peer: int) -> bool:
        return peer in self.faults.drop_to

    def cut_from(self, peer: int) -> bool:
        return peer in self.faults.drop_from

    def send(self, peer: int, frame: bytes, send: Send) -> bool:
        """Hand `frame` on now or after the peer's delay; False if it was dropped."""
        delay = self._delay.get(peer, self._base)
        held = self._held.get(peer)
        if not delay and held is None:
            return send(frame)
        if held is None:
            held = self._held[peer] = _Held()
        if held.bytes + len(frame) > self.max_held_bytes:
            return False
        due = self.loop.clock() + (delay or 0.0)
        if held.frames:
            due = max(due, held.frames[-1][0])
        held.frames.append((due, frame, send))
        held.bytes += len(frame)
        self._arm(peer, held)
        return True

    def _arm(self, peer: int, held: _Held) -> None:
        due = held.frames[0][0]
        if held.timer_at is None or due < held.timer_at:
            held.timer_at = due
            self.loop.call_at(due, lambda: self._release(peer, due))

    def _release(self, peer: int, armed_for: float) -> None:
        held = self._held.get(peer)
        if held is None or held.timer_at != armed_for:
            return  # a stale timer: an earlier one was armed since
        held.timer_at = None
        now = self.loop.clock()
        while held.frames and held.frames[0][0] <= now:
            _, frame, send = held.frames.popleft()
            held.bytes -= len(frame)
            send(frame)
        if held.frames:
            self._arm(peer, held)
        else:
            del self._held[peer]
