"""One epoll for every world socket.

A reader task per socket would pay, for every input, a trio wait (an epoll
re-registration) and a task switch: most of the cost of a 60-byte move. Here
each world socket is registered once, level-triggered, in an epoll of our own;
one task waits for that epoll's descriptor to become readable, asks it which
sockets have input (one call), and lets each of them read and handle what
arrived. One wakeup serves every socket that has input at that moment.
Linux only, like the rest of the fast path.
"""

from __future__ import annotations

import logging
import select
from contextlib import suppress
from typing import Protocol

import trio

MAX_EVENTS = 1024
RECV_BYTES = 65536

log = logging.getLogger(__name__)


class Readable(Protocol):
    def on_readable(self) -> None:
        """Read what the socket has (without blocking) and handle it; never raises."""


class EpollHub:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._targets: dict[int, Readable] = {}
        # What its targets read into, one after another (each copies what it keeps): one
        # buffer for the process, not one a socket, so a socket costs memory only for what
        # it has sent and not yet been handled.
        self.buffer = bytearray(RECV_BYTES)

    def register(self, fd: int, target: Readable) -> None:
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        self._targets[fd] = target

    def unregister(self, fd: int) -> None:
        if self._targets.pop(fd, None) is not None:
            with suppress(OSError, ValueError):  # the socket or the hub is closed already
                self._epoll.unregister(fd)

    async def run(self) -> None:
        try:
            while True:
                await trio.lowlevel.wait_readable(self._epoll.fileno())
                for fd, _ in self._epoll.poll(0, MAX_EVENTS):
                    target = self._targets.get(fd)
                    if target is not None:
                        try:
                            target.on_readable()
                        except Exception:  # a target's bug: it is not read again
                            log.exception("reading fd %d failed; unregistered", fd)
                            self.unregister(fd)
        finally:
            self._epoll.close()
