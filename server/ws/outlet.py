"""The one writer of a world socket.

Everything a session sends goes through its Outlet. When nothing is waiting,
a frame is written straight into the socket from the caller (the zone's tick
fans a snapshot out this way: one non-blocking `sendmsg` per client, no task
switch). What the kernel does not take waits here and a writer task finishes
it when the socket is writable; while anything waits, nothing is written
directly, so bytes never interleave. Messages (welcome, error, pong) and the
close frame queue in order; snapshots keep only the newest, so a slow reader skips
snapshots and never slows the tick, and one that stays behind for
`slow_close_s` is dropped. Pongs to WebSocket pings keep only the newest too
(RFC 6455 allows it), so a ping flood from a client that never reads cannot grow
the queue.
"""

from __future__ import annotations

import logging
import socket
from collections import deque

import trio

from server.ws import codec as ws

log = logging.getLogger(__name__)


class FrameCache:
    """The frame of the last snapshot payload: every outlet of a zone gets the same
    payload object in a tick, so the first one frames it and the rest reuse it."""

    def __init__(self) -> None:
        self._payload: bytes | None = None
        self._frame = b""

    def frame(self, payload: bytes) -> bytes:
        if payload is not self._payload:
            self._payload, self._frame = payload, ws.frame(payload)
        return self._frame


class Outlet:
    def __init__(self, sock: socket.socket, frames: FrameCache, *, slow_close_s: float) -> None:
        self._sock = sock
        self._frames = frames
        self._slow_close_s = slow_close_s
        self._pending: memoryview | None = None  # the rest of a frame being written
        self._controls: deque[bytes] = deque()
        self._snapshot: bytes | None = None  # newest snapshot payload not started yet
        self._pong: bytes | None = None  # the pong frame for the newest ping not answered
        self._behind_since: float | None = None
        self._wake = trio.Event()
        self._waiting: trio.CancelScope | None = None
        self.closing = trio.Event()  # set by close() and abort(): nothing new is queued
        self.ended = trio.Event()  # set when the writing is done: closed, broken or dropped
        self.aborted = False  # ended without its close frame: broken, or dropped
        self.skipped_snapshots = 0

    # --- what sessions and zones call; none of it blocks ----------------------------------

    def send(self, payload: bytes, opcode: int = ws.TEXT) -> None:
        """A message (welcome, pong, error): never dropped, in order."""
        self._enqueue_control(ws.frame(payload, opcode))

    def pong(self, payload: bytes) -> None:
        """Answer a WebSocket ping; an answer not sent yet is replaced by this one."""
        if self.closing.is_set():
            return
        frame = ws.frame(payload, ws.PONG)
        if self._idle:
            self._write_now(frame)
        else:
            self._pong = frame

    def snapshot(self, payload: bytes) -> None:
        if self.closing.is_set():
            return
        if self._idle:
            self._write_now(self._frames.frame(payload))
            return
        if self._snapshot is not None:
            self.skipped_snapshots += 1
        self._snapshot = payload
        assert self._behind_since is not None
        if trio.current_time() - self._behind_since > self._slow_close_s:
            log.info("dropping a world client that stayed behind for %.0f s",
                     self._slow_close_s)
            self.abort()

    def replaced(self) -> None:
        self.close(4009, "replaced by a newer session")

    def close(self, code: int, reason: str) -> None:
        """Send a close frame after what is queued; the writer then ends the socket."""
        if self.closing.is_set():
            return
        self._snapshot = self._pong = None
        self._enqueue_control(ws.close_frame(code, reason))
        self.closing.set()
        self._wake.set()

    # --- the writer task -------------------------------------------------------------------

    async def run(self) -> None:
        """Write what the socket did not take at once; return when the socket is done."""
        try:
            while not self.ended.is_set():
                await self._wake.wait()
                self._wake = trio.Event()
                with trio.CancelScope() as self._waiting:  # abort() ends a wait in vain
                    while self._pending is not None:
                        await trio.lowlevel.wait_writable(self._sock)
                        if self._write_pending() and not self.ended.is_set():
                            self._start_next()
                if self.closing.is_set() and self._pending is None:
                    self.ended.set()
        finally:
            self.ended.set()

    @property
    def _idle(self) -> bool:
        return (self._pending is None and not self._controls and self._pong is None
                and self._snapshot is None)

    def _enqueue_control(self, frame: bytes) -> None:
        if self.closing.is_set():
            return
        if self._idle:
            self._write_now(frame)
        else:
            self._controls.append(frame)

    def _write_now(self, frame: bytes) -> None:
        try:
            sent = self._sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return
        if sent < len(frame):
            self._pending = memoryview(frame)[sent:]
            self._behind_since = trio.current_time()
            self._wake.set()

    def _write_pending(self) -> bool:
        """Write on what is pending; True once it is all written."""
        if self._pending is None:  # aborted while waiting
            return False
        try:
            sent = self._sock.send(self._pending)
        except BlockingIOError:
            return False
        except OSError:
            self.abort()
            return False
        self._pending = self._pending[sent:] if sent < len(self._pending) else None
        return self._pending is None

    def _start_next(self) -> None:
        if self._controls:
            self._pending = memoryview(self._controls.popleft())
        elif self._pong is not None:
            self._pending, self._pong = memoryview(self._pong), None
        elif self._snapshot is not None:
            self._pending = memoryview(self._frames.frame(self._snapshot))
            self._snapshot = None
        else:
            self._behind_since = None

    def abort(self) -> None:
        """Give up on the socket (broken, or too far behind): nothing more is sent."""
        self._pending = None
        self._controls.clear()
        self._snapshot = self._pong = None
        self.aborted = True
        self.closing.set()
        self.ended.set()
        self._wake.set()
        if self._waiting is not None:
            self._waiting.cancel()
