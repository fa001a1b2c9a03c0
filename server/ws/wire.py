"""The bytes of the per-socket loops (docs/architecture.md, "A native wire module"): one
call sends every outlet's frame of a tick, one call reads every socket an epoll wakeup
found ready. Trio keeps the loop, the deadlines and every policy; these do bytes only.

Two implementations with one contract: `_wire` in C (server/ws/_wire.c, built at install;
the GIL released over the system calls, and a socket's plain moves decoded without a
Python object per frame) and `PYTHON` here. `IMPL` is the C one when it was built
(OUTPOST_COMPILE=0 leaves it out) and OUTPOST_NATIVE=0 does not ask for Python; tests
run against both.

send_each(fds, frames) -> (bytes sent, [(index, sent)]):
    One non-blocking send of frames[i] to fds[i] each; the indexes of the frames not
    written whole, with what was (0: nothing; -1: the socket is broken or closed).

read_ready(epoll, modes, limit) -> [(fd, moves, data)]:
    What each socket the `epoll` (the hub's, registered by fd) finds ready has, one recv
    of up to RECV_BYTES each (level-triggered: what is left comes at the next wakeup).
    `data` None: the peer is gone (EOF) or the socket broken. `modes[fd]` (a byte per
    fd; 0 past its end) says how to take a socket's bytes: MODE_BYTES as they are;
    MODE_V1 or MODE_V2 when its frame reader stands at a frame boundary and it speaks
    that wire: then its leading frames that are plain moves ({"type": "move", "seq",
    "dx", "dy"} and nothing else; final, masked, at most MAX_MOVE_BYTES, whole in this
    read; numbers finite within ±limit, seq a non-negative integer) may come decoded, as
    (seq, dx, dy), and `data` is everything after them. Python's implementation decodes
    none (`moves` is always None): a move then takes the codec's and the Conversation's
    general path, which judges it the same way.
"""

from __future__ import annotations

import os
import select
from typing import Protocol

Move = tuple[int, float, float]  # seq, dx, dy
Ready = tuple[int, list[Move] | None, bytes | None]
MODE_BYTES, MODE_V1, MODE_V2 = 0, 1, 2
MAX_MOVE_BYTES = 125  # the longest move payload decoded natively (a move is ~40)
RECV_BYTES = 65536
MAX_EVENTS = 1024


class Wire(Protocol):
    def send_each(self, fds: list[int], frames: list[bytes]) -> tuple[int, list[tuple[int, int]]]:
        ...

    def read_ready(self, epoll: select.epoll, modes: bytes | bytearray,
                   limit: float) -> list[Ready]:
        ...


class Python:
    """The pure-Python twin: the same calls, a system call at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray(RECV_BYTES)

    def send_each(self, fds: list[int], frames: list[bytes]) -> tuple[int, list[tuple[int, int]]]:
        total, short = 0, []
        for i, (fd, frame) in enumerate(zip(fds, frames, strict=True)):
            try:
                sent = os.write(fd, frame) if fd >= 0 else -1
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = -1
            if sent > 0:
                total += sent
            if sent < len(frame):
                short.append((i, sent))
        return total, short

    def read_ready(self, epoll: select.epoll, modes: bytes | bytearray,
                   limit: float) -> list[Ready]:
        buffer, found = self._buffer, list[Ready]()
        for fd, _ in epoll.poll(0, MAX_EVENTS):
            try:
                got = os.readv(fd, [buffer])
            except BlockingIOError:
                continue
            except OSError:
                got = 0
            found.append((fd, None, bytes(memoryview(buffer)[:got]) if got else None))
        return found


PYTHON: Wire = Python()
NATIVE: Wire | None
try:
    from server.ws import _wire as NATIVE
except ImportError:  # installed with OUTPOST_COMPILE=0, or no C compiler
    NATIVE = None

IMPL: Wire = NATIVE if NATIVE is not None and os.environ.get("OUTPOST_NATIVE") != "0" \
    else PYTHON

