"""One epoll for every world socket.

A reader task per socket would pay, for every input, a trio wait (an epoll
re-registration) and a task switch: most of the cost of a 60-byte move. Here
each world socket is registered once, level-triggered, in an epoll of our own;
one task waits for that epoll's descriptor to become readable, and one call
(server/ws/wire.py, `read_ready`) reads every socket that has input at that moment,
decoding the plain moves of those whose `modes` allow it; each target then handles
what its socket had. Linux only, like the rest of the fast path.
"""

from __future__ import annotations

import logging
import select
from contextlib import suppress
from typing import Protocol

import trio

from server.ws import wire
from server.ws.wire import MODE_BYTES, Move

MODES = 65536  # sockets with a mode byte (the fds below it; any above are read as bytes)

log = logging.getLogger(__name__)


class Readable(Protocol):
    def on_input(self, moves: list[Move] | None, data: bytes | None) -> None:
        """Handle what the socket had: decoded moves (when its mode allowed them), then
        the bytes after them; `data` None once the peer is gone. Never raises."""


class EpollHub:
    def __init__(self, *, move_limit: float = 0.0) -> None:
        self._epoll = select.epoll()
        self._targets: dict[int, Readable] = {}
        self._move_limit = move_limit  # the largest |dx| or |dy| a decoded move may have
        # A byte per fd, read by `read_ready` (wire.py): how its socket's bytes may be
        # taken. A target sets its own; a socket starts, and ends, as plain bytes (an fd
        # is reused by the next socket).
        self.modes = bytearray(MODES)

    def register(self, fd: int, target: Readable) -> None:
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        self._targets[fd] = target
        self.set_mode(fd, MODE_BYTES)

    def set_mode(self, fd: int, mode: int) -> None:
        if fd < MODES:
            self.modes[fd] = mode

    def unregister(self, fd: int) -> None:
        if self._targets.pop(fd, None) is not None:
            self.set_mode(fd, MODE_BYTES)
            with suppress(OSError, ValueError):  # the socket or the hub is closed already
                self._epoll.unregister(fd)

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._epoll.fileno())
                targets = self._targets
                for fd, moves, data in wire.IMPL.read_ready(self._epoll, self.modes,
                                                            self._move_limit):
                    target = targets.get(fd)
                    if target is not None:
                        try:
                            target.on_input(moves, data)
                        except Exception:  # a target's bug: it is not read again
                            log.exception("reading fd %d failed; unregistered", fd)
                            self.unregister(fd)
        finally:
            self._epoll.close()
