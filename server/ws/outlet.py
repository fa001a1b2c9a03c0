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

A snapshot arrives as the view of the member's block (zones/interest.py), and the
outlet picks its form when it starts writing it: for a v2 member, a delta against
the last snapshot it has sent when that was this block's previous tick, else a
complete one. So a member that skipped snapshots never gets a delta against one it
was not sent.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Sequence

import trio

from server.ws import codec as ws
from server.ws import messages, wire
from server.ws.stats import ABORTED, WireStats
from zones.actor import Outlet as ZoneOutlet
from zones.interest import V1, Base, Snapshot, View

FRAMES_KEPT = 4096
DEFLATE_FROM = 4096  # bytes: smaller snapshots go plain (compressing them costs more than
                     # the few hundred bytes it saves, and a view's complete form is 1-3 KB)


class FrameCache:
    """Frames of recent snapshot payloads. The members of a block get the same payload
    object in a tick, so the first one's outlet frames it (and compresses it, for the
    members that agreed to permessage-deflate) and the others reuse it; by identity,
    so that a payload is never hashed. Payloads under DEFLATE_FROM bytes are not worth
    compressing (they would cost more than they save)."""

    def __init__(self) -> None:
        # id(payload) -> [payload, its frame, its compressed frame], each made when asked
        self._frames: dict[int, list[bytes | None]] = {}
        self._last: list[bytes | None] = [b"", None, None]

    def frame(self, payload: bytes, opcode: int, *, deflate: bool = False) -> bytes:
        found = self._last
        if payload is not found[0]:
            found = self._frames.get(id(payload)) or self._new(payload)
            if found[0] is not payload:
                found = self._new(payload)
            self._last = found
        kind = 2 if deflate and len(payload) >= DEFLATE_FROM else 1
        framed = found[kind]
        if framed is None:
            framed = found[kind] = (ws.deflated_frame(payload, opcode) if kind == 2
                                    else ws.frame(payload, opcode))
        return framed

    def _new(self, payload: bytes) -> list[bytes | None]:
        if len(self._frames) >= FRAMES_KEPT:
            self._frames.clear()
        entry: list[bytes | None] = [payload, None, None]
        self._frames[id(payload)] = entry
        return entry


EVENTS_KEPT = 32  # events messages waiting for a client behind on reading: newest kept


class Outlet:
    def __init__(self, sock: socket.socket, frames: FrameCache, *, stats: WireStats,
                 slow_close_s: float, wire: str = V1, deflate: bool = False) -> None:
        self._sock = sock
        self._frames = frames
        self._stats = stats
        self._slow_close_s = slow_close_s
        self._wire = wire
        self._deflate = deflate  # snapshots may go compressed (permessage-deflate)
        self._opcode = ws.TEXT if wire == V1 else ws.BINARY
        self._pending: memoryview | None = None  # the rest of a frame being written
        self._controls: deque[bytes] = deque()
        self._view: Snapshot | None = None  # the newest snapshot not started yet
        self._sent: Base | None = None  # the view and tick of the last snapshot started
        self._pong: bytes | None = None  # the pong frame for the newest ping not answered
        self._events: deque[bytes] = deque(maxlen=EVENTS_KEPT)  # events frames not sent yet
        self.events_dropped = 0
        self._behind_since: float | None = None
        self._wake = trio.Event()
        self._waiting: trio.CancelScope | None = None
        self.closing = trio.Event()  # set by close() and abort(): nothing new is queued
        self.ended = trio.Event()  # set when the writing is done: closed, broken or dropped
        self.aborted = False  # ended without its close frame: broken, or dropped
        self.skipped_snapshots = 0
        self.dropped_for = ""  # why the outlet gave up on a client, if it did
        self.close_reason = ""  # the reason its close frame gave
        self.close_code: int | None = None  # the code it closed with (ABORTED: none sent)

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

    def snapshot(self, view: Snapshot) -> None:
        frame = self._take(view)
        if frame is not None:
            self._write_now(frame)

    def _take(self, view: Snapshot) -> bytes | None:
        """The frame to write at once for this tick's view, when nothing waits; else None,
        and the view waits here (the newest only)."""
        if self.closing.is_set():
            return None
        if self._idle:
            frame, self._sent = self._fresh(view)
            self._stats.snapshots[view.zone][0] += 1
            return frame
        events = view.events(self._wire)
        if events is not None:
            self._queue_events(self._frames.frame(events, self._opcode))
        if self._view is not None:
            self.skipped_snapshots += 1
            self._stats.snapshots[self._view.zone][1] += 1
        self._view = view
        assert self._behind_since is not None
        if trio.current_time() - self._behind_since > self._slow_close_s:
            self.dropped_for = f"it stayed behind for {self._slow_close_s:g} s"
            self.abort()
        return None

    def replaced(self) -> None:
        self.close(4009, "replaced by a newer session")

    def refused(self, code: str, message: str, seq: int) -> None:
        """The game would not take the client's input `seq`: an `error` message naming it
        (docs/protocol.md, "Outpost, the game's inputs")."""
        wire = messages.JSON if self._wire == V1 else messages.MSGPACK
        self.send(messages.error(wire, code, message, seq), self._opcode)

    def resync(self) -> None:
        """The client asks for a complete snapshot: the next one it is sent is."""
        self._sent = None

    def close(self, code: int, reason: str) -> None:
        """Send a close frame after what is queued; the writer then ends the socket."""
        if self.closing.is_set():
            return
        self._view, self._pong = None, None
        self._events.clear()
        self.close_code, self.close_reason = code, reason
        self._stats.closes[code] += 1
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
                and not self._events and self._view is None)

    def _queue_events(self, frame: bytes) -> None:
        """Events go out in order, never skipped like snapshots; but a client that stays
        behind keeps only the newest EVENTS_KEPT of them (the state they changed, hit
        points and positions, is in every snapshot)."""
        if len(self._events) == EVENTS_KEPT:
            self.events_dropped += 1
        self._events.append(frame)

    def _framed(self, view: Snapshot) -> tuple[bytes, Base]:
        """`view`'s snapshot framed for this outlet (its wire, deflate and last snapshot
        sent), and what the outlet will have been sent with it."""
        payload, base = view.encoded(self._wire, self._sent)
        return self._frames.frame(payload, self._opcode, deflate=self._deflate), base

    def _fresh(self, view: Snapshot) -> tuple[bytes, Base]:
        """What an idle outlet writes at once of `view` (its events, then its snapshot),
        and what it will have been sent: the same for every outlet of one wire, deflate
        and last snapshot (`fan_out` makes it once for them all)."""
        frame, base = self._framed(view)
        events = view.events(self._wire)
        if events is not None:  # first what happened, then how things stand; one write
            # for both, as a send is most of what a member costs
            frame = self._frames.frame(events, self._opcode) + frame
        return frame, base

    def _snapshot_frame(self, view: Snapshot) -> bytes:
        self._stats.snapshots[view.zone][0] += 1
        frame, self._sent = self._framed(view)
        return frame

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
            sent = -1
        self._stats.bytes_sent += max(sent, 0)
        if sent < len(frame):
            self._written(frame, sent)

    def _written(self, frame: bytes, sent: int) -> None:
        """The socket took only `sent` bytes of `frame`, written at once (-1: it is
        broken): the writer finishes it when the socket is writable."""
        if sent < 0:
            self.abort()
            return
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
        self._stats.bytes_sent += sent
        self._pending = self._pending[sent:] if sent < len(self._pending) else None
        return self._pending is None

    def _start_next(self) -> None:
        if self._controls:
            self._pending = memoryview(self._controls.popleft())
        elif self._pong is not None:
            self._pending, self._pong = memoryview(self._pong), None
        elif self._events:
            self._pending = memoryview(self._events.popleft())
        elif self._view is not None:
            self._pending = memoryview(self._snapshot_frame(self._view))
            self._view = None
        else:
            self._behind_since = None

    def abort(self) -> None:
        """Give up on the socket (broken, or too far behind): nothing more is sent."""
        if not self.closing.is_set():
            self.close_code = ABORTED
            self._stats.closes[ABORTED] += 1
        self._pending = None
        self._controls.clear()
        self._view, self._pong = None, None
        self._events.clear()
        self.aborted = True
        self.closing.set()
        self.ended.set()
        self._wake.set()
        if self._waiting is not None:
            self._waiting.cancel()


def fan_out(snapshots: Sequence[tuple[ZoneOutlet, View]]) -> None:
    """Hand each outlet its view of a tick (zones/actor.py, `FanOut`), and write every frame
    that can go at once in one call (server/ws/wire.py, `send_each`): a send for each, no
    Python between them. The members of a block come one after another with one view;
    their frames are made once for each wire, deflate and last snapshot sent (`_fresh`),
    so that an outlet costs little more than its send."""
    outlets: list[Outlet] = []
    fds: list[int] = []
    frames: list[bytes] = []
    view: Snapshot | None = None
    made: dict[tuple[str, bool, Base | None], tuple[bytes, Base]] = {}
    for member, now in snapshots:
        if type(member) is not Outlet:  # a member of another kind (a test's): its own way
            member.snapshot(now)
            continue
        outlet = member
        # `_take`'s idle case inline, its frames shared and its count made once below: a
        # call and a count per member cost 6-8 % of a core at 2000 spread players.
        if outlet.closing.is_set() or not outlet._idle:
            outlet._take(now)  # the view waits (the newest only), or the outlet is closing
            continue
        if now is not view:
            view, made = now, {}
        key = (outlet._wire, outlet._deflate, outlet._sent)
        found = made.get(key)
        if found is None:
            found = made[key] = outlet._fresh(now)
        frame, outlet._sent = found
        outlets.append(outlet)
        fds.append(outlet._sock.fileno())  # -1 once closed: never another socket's
        frames.append(frame)
    if not outlets:
        return
    stats = outlets[0]._stats  # one WireStats in a process, shared
    stats.snapshots[now.zone][0] += len(outlets)  # a tick's views are of one zone
    total, short = wire.IMPL.send_each(fds, frames)
    stats.bytes_sent += total
    for i, sent in short:
        outlets[i]._written(frames[i], sent)
