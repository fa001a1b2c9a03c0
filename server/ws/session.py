"""One world WebSocket session (docs/protocol.md, "World (WebSocket)"): the trio shell
around a Conversation (server/ws/messages.py: what the client's messages mean).

A session is a nursery: the writer (its Outlet), the joins it waits on (each asks
the character service), the deadlines (token expiry, first join, idle) and the
closing handshake. Reading is event-driven through the process's EpollHub, which
calls `on_input` with what the socket had: moves already decoded (server/ws/wire.py:
while the frame reader stands at a frame boundary, the session's mode lets the hub's
reader decode them) and bytes. Each move and each whole message goes through the
Conversation, and what it asks for is done at once (a move goes to the zone
without a task switch) or queued for the session's own task (a join asks Postgres).
When the peer goes, the writer breaks, or the closing handshake ends, the nursery
ends: the character leaves its zone, which saves its position.

A close the server starts (4001, 4008, 4009, 1001) must reach the client even while
it keeps sending. Closing a socket whose input has not been read makes the kernel
answer with a reset, which destroys the close frame still in flight. So the close
frame goes out after what is queued (waiting for a client that reads slowly as long
as WORLD_SLOW_CLOSE allows), the socket is half-closed (FIN), and input is read on
but discarded until the peer's close frame or EOF, for at most CLOSE_LINGER_S;
only then is the socket closed.

Whatever one client's input makes any part of this raise (a bug of ours: the client's
own faults are refusals and violations), that session alone ends, with 1011, and the
error is logged once with the session's id: nothing escapes into the hub or the edge,
which serve every other session.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import trio

from auth.tokens import Claims, Tokens, bearer_token
from characters.service import character_json
from persistence.errors import DomainError, Unauthenticated
from rules.api import Input
from server.config import Settings
from server.logs import SESSION
from server.ws import codec, messages
from server.ws.hub import EpollHub
from server.ws.messages import (
    CloseFrame,
    Conversation,
    Join,
    Ping,
    PingFrame,
    Received,
    Refusal,
    Renew,
    Resync,
    Travel,
    Violation,
    Wire,
)
from server.ws.outlet import FrameCache, Outlet
from server.ws.stats import WireStats
from server.ws.wire import MAX_MOVE_BYTES, MODE_BYTES, MODE_V1, MODE_V2, Move
from zones.interest import V1
from zones.world import Entered, World

log = logging.getLogger(__name__)

CLOSE_LINGER_S = 2.0  # how long a closing socket waits for its peer's goodbye
JOIN_QUEUE = 2  # joins waiting for the character service, per session


@dataclass(frozen=True, slots=True)
class _Rejoin:
    """Join the character again, quietly (its zone may be back)."""

    character_id: uuid.UUID


def authenticate(tokens: Tokens, authorization: str | None,
                 query_token: str | None) -> Claims:
    """The user, auth session and expiry (Unix time) of the socket's token, from the
    header or the query."""
    if authorization:
        return tokens.verify(bearer_token(authorization))
    if query_token:
        return tokens.verify(query_token)
    raise Unauthenticated("missing token: send Authorization: Bearer <jwt> or ?token=<jwt>")


def _not_joined(character_id: str, input: Input) -> None:
    raise AssertionError("the conversation lets inputs through only once joined")


def half_close(sock: socket.socket) -> None:
    """Send FIN after what was written; the peer has all of it, and reading goes on."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class Session:
    """Reads through the EpollHub (`on_input`), writes through its Outlet."""

    def __init__(self, sock: socket.socket, leftover: bytes, *, claims: Claims, tokens: Tokens,
                 world: World, settings: Settings, hub: EpollHub, frames: FrameCache,
                 stats: WireStats, wire: Wire, deflate: bool = False) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        # How the hub may take this socket's bytes while its reader is at a frame boundary
        # (a frame limit under a move's size leaves every frame to the codec).
        self._mode = (MODE_BYTES if settings.world_max_message_bytes < MAX_MOVE_BYTES
                      else MODE_V1 if wire.name == V1 else MODE_V2)
        self.user_id = claims.user_id
        self.auth_session = claims.session_id  # its end (a logout) closes this socket
        self._tokens = tokens  # to check a renewed token
        self._expires_at = claims.expires_at  # Unix time: a renewed token moves it
        self._renewed = trio.Event()
        self._world = world
        self._hub = hub
        self._slow_close_s = settings.world_slow_close_s
        self._wire = wire
        self._deflate = deflate
        self.outlet = Outlet(sock, frames, stats=stats, slow_close_s=settings.world_slow_close_s,
                             wire=wire.name, deflate=deflate)
        now = trio.current_time()
        self._reader = codec.FrameReader(max_message_bytes=settings.world_max_message_bytes,
                                         max_frames_per_s=settings.world_max_frames_per_s,
                                         now=now, deflate=deflate)
        self._reader.feed(leftover)
        self._stats = stats
        self._conversation = Conversation(
            max_messages_per_s=settings.world_max_messages_per_s,
            join_timeout_s=settings.world_join_timeout_s,
            idle_timeout_s=settings.world_idle_timeout_s, now=now, wire=wire,
            inputs=world.inputs)
        self._entered: Entered | None = None
        self._character_id = ""  # of _entered, as zones name it
        self._joining = ""  # the character of the join in progress, if any
        self._act = _not_joined  # _entered's zone's act (only called once joined)
        self._joins_in, self._joins_out = trio.open_memory_channel[Join | Travel | _Rejoin](
            JOIN_QUEUE)
        self.session_id = uuid.uuid4().hex
        self._framing_lost = False  # after a protocol violation input can only be discarded
        self._failed = False  # a fault of ours ended it (logged once)
        self._peer_gone = trio.Event()  # the peer said goodbye, or vanished
        self._zone_lost = False  # told zone_unavailable, and not welcomed back yet

    async def run(self) -> None:
        SESSION.set(self.session_id)  # this task's and its children's log lines name it
        log.info("world session of user %s opened (%s%s)", self.user_id, self._wire.name,
                 ", deflate" if self._deflate else "")
        began = trio.current_time()
        self._hub.register(self._fd, self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outlet.run)
                nursery.start_soon(self._finish_closing, nursery)
                nursery.start_soon(self._guarded, self._serve_joins)
                nursery.start_soon(self._guarded, self._watch_deadlines)
                self.on_input(None, b"")  # what came with the handshake
        finally:
            self._hub.unregister(self._fd)
            self._leave()
            outlet = self.outlet
            log.info("world session closed with %s%s after %.1f s%s", outlet.close_code,
                     f" ({outlet.close_reason})" if outlet.close_reason else "",
                     trio.current_time() - began,
                     f": dropped, {outlet.dropped_for}" if outlet.dropped_for else "")

    def plays(self, character_id: str) -> bool:
        """Whether it plays the character (as zones name it), or is joining it now."""
        return character_id != "" and character_id in (
            self._joining, self._character_id if self._entered is not None else "")

    def close(self, code: int, reason: str) -> None:
        self.outlet.close(code, reason)

    def on_input(self, moves: list[Move] | None, data: bytes | None) -> None:
        """What the hub read from the socket (`Readable`); never blocks, never raises."""
        try:
            self._on_input(moves, data)
        except Exception as exc:
            self.fail(exc)
        fast = (self._reader.at_frame_start and not self._framing_lost
                and not self._peer_gone.is_set() and not self.outlet.closing.is_set())
        self._hub.set_mode(self._fd, self._mode if fast else MODE_BYTES)

    def fail(self, exc: BaseException) -> None:
        """A fault of ours met while serving this session: it alone ends, with 1011."""
        if not self._failed:
            self._failed = True
            self._stats.faults += 1
            log.error("world session %s failed; closing it with 1011", self.session_id,
                      exc_info=exc, extra={"session": self.session_id})
        self._framing_lost = True  # whatever else it sent is passed over
        self.close(1011, "internal error")

    async def _guarded(self, serve: Callable[[], Awaitable[None]]) -> None:
        """One of the session's tasks; a fault in it ends the session, not the edge."""
        try:
            await serve()
        except Exception as exc:
            self.fail(exc)

    def _on_input(self, moves: list[Move] | None, data: bytes | None) -> None:
        if data is None:  # the peer is gone: EOF, or a broken socket
            self._peer_gone.set()
            if not self.outlet.closing.is_set():  # vanished without a goodbye
                self.outlet.abort()
            return
        if self._peer_gone.is_set() or self._framing_lost:
            return
        now = trio.current_time()
        try:
            if moves is not None:
                for seq, dx, dy in moves:
                    if self.outlet.closing.is_set():  # we said goodbye: moves count no more
                        break
                    self._reader.count_frame(now)
                    self._handle(self._conversation.move(seq, dx, dy, now))
                if not data:  # moves only, the common case: the reader holds nothing
                    return
            self._reader.feed(data)
            if self.outlet.closing.is_set():  # we said goodbye: only the peer's counts now
                if self._reader.goodbye_seen():
                    self._peer_gone.set()
                return
            received = self._reader.messages(now)
        except codec.ProtocolViolation as exc:
            self._framing_lost = True
            self.close(exc.code, exc.reason)
            return
        for opcode, payload in received:
            if self.outlet.closing.is_set():  # we said goodbye: only the peer's counts now
                if opcode == codec.CLOSE:
                    self._peer_gone.set()
                    return
                continue
            self._handle(self._conversation.receive(opcode, payload, now))

    def _handle(self, received: Received) -> None:
        if type(received) is Input:  # the common case (a move), thousands a second
            self._act(self._character_id, received)
            return
        match received:
            case Join() | Travel():
                try:
                    self._joins_in.send_nowait(received)
                except trio.WouldBlock:
                    self._error("rate_limited", "wait for the answer to your last join")
            case Ping(t):
                self._send(messages.pong(self._wire, t))
            case Resync():
                self.outlet.resync()
            case Renew(token):
                self._renew(token)
            case Refusal(code, message):
                self._error(code, message)
            case PingFrame(payload):
                self.outlet.pong(payload)
            case CloseFrame(code):
                self._peer_gone.set()
                self.close(code, "bye")
            case Violation(code, reason):
                self.close(code, reason)

    async def _finish_closing(self, nursery: trio.Nursery) -> None:
        """The closing handshake (see the module's docstring). Our close frame may wait
        behind what the client has not read yet, as long as any client may stay behind."""
        await self.outlet.closing.wait()
        with trio.move_on_after(self._slow_close_s):
            await self.outlet.ended.wait()
        if self.outlet.ended.is_set() and not self.outlet.aborted:
            half_close(self._sock)
            with trio.move_on_after(CLOSE_LINGER_S):
                await self._peer_gone.wait()
        nursery.cancel_scope.cancel()

    def _renew(self, token: str) -> None:
        """A fresh access token of this socket's own session: the socket lives until it
        expires (the old one's expiry closed it with 4001 before: a hiccup every JWT_TTL)."""
        try:
            claims = self._tokens.verify(token)
        except Unauthenticated as exc:
            self._error(exc.code, exc.message)
            return
        if (claims.user_id, claims.session_id) != (self.user_id, self.auth_session):
            self._error("forbidden", "that token is of another session")
            return
        self._expires_at = max(self._expires_at, claims.expires_at)
        self._renewed.set()

    async def _watch_deadlines(self) -> None:
        """The token's expiry (moved by a renewal), the first join's deadline, then the
        idle timeout."""
        while True:
            expires_at = trio.current_time() + max(0.0, self._expires_at - time.time())
            with trio.move_on_at(min(self._conversation.deadline, expires_at)):
                await self._renewed.wait()
                self._renewed = trio.Event()
                continue  # a later expiry: count again from it
            now = trio.current_time()
            if now >= expires_at:
                self.close(4001, "the token has expired")
                return
            expired = self._conversation.expired(now)
            if expired is not None:
                self.close(expired.code, expired.reason)
                return

    async def _serve_joins(self) -> None:
        async for request in self._joins_out:
            match request:
                case Travel(zone):
                    await self._travel(zone)
                case Join(character_id):
                    await self._join(character_id, quiet=False)
                case _Rejoin(character_id) if self._zone_lost:  # not back already
                    await self._join(character_id, quiet=True)

    # --- what a zone link asks of its member -----------------------------------------------

    def zone_lost(self) -> None:
        self._zone_lost = True
        self._error("zone_unavailable", "your zone stopped answering; you will be back "
                    "in it as soon as it is")

    def rejoin(self) -> None:
        if self._entered is not None:
            with suppress(trio.WouldBlock):  # a join is pending already: that will do
                self._joins_in.send_nowait(_Rejoin(self._entered.character.id))

    # ----------------------------------------------------------------------------------------

    async def _join(self, character_id: uuid.UUID, *, quiet: bool) -> None:
        self._joining = str(character_id)
        try:
            enter = self._world.rejoin if quiet else self._world.enter
            entered = await enter(self.user_id, character_id, self)
        except DomainError as exc:
            if not quiet:  # an automatic re-join keeps trying without a word
                self._error(exc.code, exc.message)  # the socket stays open for another join
            return
        finally:
            self._joining = ""
        if self._entered is not None and self._entered.character.id != character_id:
            self._leave()  # a session plays one character at a time
        log.info("joined %s with character %s", entered.admission.zone_id, character_id,
                 extra={"zone": entered.admission.zone_id})
        self._welcome(entered)

    async def _travel(self, zone_id: str) -> None:
        if self._entered is None:
            self._error("not_joined", "join a character before travelling")
            return
        try:
            entered = await self._world.travel(self._entered, zone_id, self)
        except DomainError as exc:
            self._error(exc.code, exc.message)  # still where it was
            return
        log.info("travelled to %s", zone_id, extra={"zone": zone_id})
        self._welcome(entered)

    def _welcome(self, entered: Entered) -> None:
        self._entered = entered
        self._zone_lost = False
        self._character_id = str(entered.character.id)
        self._act = entered.zone.act
        self._conversation.welcomed(self._character_id, trio.current_time())
        admission = entered.admission
        character = {**character_json(entered.character), "zone_id": admission.zone_id,
                     "x": admission.x, "y": admission.y}
        self._send(messages.welcome(self._wire, admission.zone_id, admission.tick,
                                    admission.tick_rate_hz, character, admission.eid,
                                    self._world.fields))

    def _leave(self) -> None:
        if self._entered is not None:
            self._entered.zone.leave(self._character_id, self)
            self._entered = None
            self._act = _not_joined
            self._conversation.left()

    def _error(self, code: str, message: str) -> None:
        self._send(messages.error(self._wire, code, message))

    def _send(self, payload: bytes) -> None:
        self.outlet.send(payload, self._wire.opcode)
