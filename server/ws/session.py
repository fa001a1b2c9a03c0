"""One world WebSocket session (docs/protocol.md, "World (WebSocket)").

A session is a nursery: the writer (its Outlet: what the zone and the session
produced), the joins it is waiting on (each asks the character service), the
deadlines (token expiry, first join, idle), and the closing handshake. Reading
is event-driven through the process's EpollHub, which calls `on_readable`
when the socket has input: parse, validate, route to the zone, without a task
switch per message. When the peer goes, the writer breaks, or the session
closes, the nursery ends: the character leaves its zone, which saves its
position.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from auth.tokens import Tokens, bearer_token
from persistence.errors import DomainError, Unauthenticated
from server.config import Settings
from server.http.characters import character_json
from server.ws import codec as ws
from server.ws.hub import EpollHub
from server.ws.outlet import FrameCache, Outlet
from zones.world import Entered, World, ZoneLink

log = logging.getLogger(__name__)

CLOSE_FLUSH_S = 2.0  # how long a closing session waits for its close frame to go out
RECV_BYTES = 65536
_NUMBERS = (int, float)  # by exact type: bool, an int subclass, is not a number here
JOIN_QUEUE = 2  # joins waiting for the character service, per session


def error_message(code: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "code": code, "message": message})


class TokenBucket:
    """Allows `rate` messages a second with bursts of twice that (pure logic)."""

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = 2 * rate
        self._tokens = self._capacity
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass
class Joined:
    entered: Entered
    character_id: str
    last_seq: int = -1

    @property
    def zone(self) -> ZoneLink:
        return self.entered.zone


def authenticate(tokens: Tokens, authorization: str | None,
                 query_token: str | None) -> tuple[uuid.UUID, float]:
    """The user and expiry (Unix time) of the session's token, from the header or query."""
    if authorization:
        return tokens.verify(bearer_token(authorization))
    if query_token:
        return tokens.verify(query_token)
    raise Unauthenticated("missing token: send Authorization: Bearer <jwt> or ?token=<jwt>")


class Session:
    """Reads through the EpollHub (`on_readable`), writes through its Outlet."""

    def __init__(self, sock: socket.socket, leftover: bytes, *, user_id: uuid.UUID,
                 expires_at: float, world: World, settings: Settings, hub: EpollHub,
                 frames: FrameCache) -> None:
        self._sock = sock
        self._user_id = user_id
        self._expires_at = expires_at
        self._world = world
        self._settings = settings
        self._hub = hub
        self.outlet = Outlet(sock, frames, slow_close_s=settings.world_slow_close_s)
        self._reader = ws.FrameReader(max_message_bytes=settings.world_max_message_bytes)
        self._reader.feed(leftover)
        self._buffer = bytearray(RECV_BYTES)
        self._joined: Joined | None = None
        # Joins, travels and automatic re-joins wait here for the session's own task.
        self._joins_in, self._joins_out = trio.open_memory_channel[dict[str, Any]](JOIN_QUEUE)
        self.session_id = uuid.uuid4().hex
        now = trio.current_time()
        self._bucket = TokenBucket(settings.world_max_messages_per_s, now)
        self._deadline = now + settings.world_join_timeout_s  # no join, or idle, past this
        self._closing = trio.Event()  # we are saying goodbye
        self._peer_gone = trio.Event()  # the peer said goodbye, or vanished

    async def run(self) -> None:
        self._hub.register(self._sock.fileno(), self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, nursery)
                nursery.start_soon(self._finish_closing, nursery)
                nursery.start_soon(self._serve_joins)
                nursery.start_soon(self._watch_deadlines)
                self.on_readable()  # what came with the handshake
        finally:
            self._hub.unregister(self._sock.fileno())
            self._leave()

    def close(self, code: int, reason: str) -> None:
        self.outlet.close(code, reason)
        self._closing.set()

    def on_readable(self) -> None:
        """Read what has arrived and handle it; called by the hub, never blocks."""
        if self._peer_gone.is_set():
            return
        try:
            while True:
                try:
                    received = self._sock.recv_into(self._buffer)
                except BlockingIOError:
                    break
                except OSError:
                    received = 0
                if not received:  # the peer is gone: nothing to say goodbye to
                    self._peer_gone.set()
                    self._closing.set()
                    self.outlet.abort()
                    return
                self._reader.feed(memoryview(self._buffer)[:received])
                if received < RECV_BYTES:
                    break
            for opcode, payload in self._reader.messages():
                if self._closing.is_set():  # we said goodbye: wait for the peer's
                    if opcode == ws.CLOSE:
                        self._peer_gone.set()
                        return
                elif not self._on_message(opcode, payload):
                    return
        except ws.ProtocolViolation as exc:
            self.close(exc.code, exc.reason)

    async def _write(self, nursery: trio.Nursery) -> None:
        await self.outlet.run()
        nursery.cancel_scope.cancel()

    async def _finish_closing(self, nursery: trio.Nursery) -> None:
        """The closing handshake: our close frame out, then the peer's back (RFC 6455
        wants the server to close TCP last), within CLOSE_FLUSH_S."""
        await self._closing.wait()
        with trio.move_on_after(CLOSE_FLUSH_S):
            await self.outlet.ended.wait()
            await self._peer_gone.wait()
        nursery.cancel_scope.cancel()

    async def _watch_deadlines(self) -> None:
        """The token's expiry, the first join's deadline, then the idle timeout."""
        expires_at = trio.current_time() + max(0.0, self._expires_at - time.time())
        while True:
            await trio.sleep_until(min(self._deadline, expires_at))
            now = trio.current_time()
            if now >= expires_at:
                self.close(4001, "the token has expired")
                return
            if now >= self._deadline:
                self.close(4008, "idle for too long" if self._joined else "no join in time")
                return

    async def _serve_joins(self) -> None:
        async for body in self._joins_out:
            if body["type"] == "travel":
                await self._travel(body)
            else:
                await self._join(body)

    # --- what a zone link asks of its member -----------------------------------------------

    def zone_lost(self) -> None:
        self._error("zone_unavailable", "your zone stopped answering; you will be back "
                    "in it as soon as it is")

    def rejoin(self) -> None:
        if self._joined is not None:
            with suppress(trio.WouldBlock):  # a join is pending already: that will do
                self._joins_in.send_nowait({"type": "join", "quiet": True,
                                            "character_id": self._joined.character_id})

    def _on_message(self, opcode: int, payload: bytes) -> bool:
        """Handle one message; False once the session is closing."""
        if opcode == ws.CLOSE:
            code = int.from_bytes(payload[:2], "big") if payload else 1000
            self._peer_gone.set()
            self.close(code if 1000 <= code < 5000 else 1000, "bye")
            return False
        if opcode == ws.PING:
            self.outlet.send(payload, ws.PONG)
            return True
        if opcode == ws.PONG:
            return True
        now = trio.current_time()
        if not self._bucket.take(now):
            self.close(4008, "too many messages")
            return False
        if self._joined:
            self._deadline = now + self._settings.world_idle_timeout_s
        if opcode != ws.TEXT:
            self._error("validation_failed", "send text frames of JSON")
            return True
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._error(*_not_json(payload))
            return True
        if not isinstance(body, dict):
            self._error("bad_json", "the message must be a JSON object")
            return True
        match body.get("type"):
            case "move":
                self._move(body)
            case "join" | "travel":
                try:
                    self._joins_in.send_nowait({**body, "quiet": False})
                except trio.WouldBlock:
                    self._error("rate_limited", "wait for the answer to your last join")
            case "ping":
                self.outlet.send(orjson.dumps({"type": "pong", "t": body.get("t")}))
            case _:
                self._error("validation_failed", "type must be join, move, travel or ping")
        return True

    async def _join(self, body: dict[str, Any]) -> None:
        raw_id = body.get("character_id")
        try:
            character_id = uuid.UUID(raw_id) if isinstance(raw_id, str) else None
        except ValueError:
            character_id = None
        if character_id is None:
            self._error("validation_failed", "character_id must be a character's uuid")
            return
        try:
            entered = await self._world.enter(self._user_id, character_id, self)
        except DomainError as exc:
            if not body["quiet"]:  # an automatic re-join keeps trying without a word
                self._error(exc.code, exc.message)  # the socket stays open for another join
            return
        last_seq = -1
        if self._joined and self._joined.character_id == str(character_id):
            last_seq = self._joined.last_seq  # the same character again: seq goes on
        else:
            self._leave()  # a session plays one character at a time
        self._welcome(Joined(entered, str(character_id), last_seq))

    async def _travel(self, body: dict[str, Any]) -> None:
        joined = self._joined
        if joined is None:
            self._error("not_joined", "join a character before travelling")
            return
        try:
            entered = await self._world.travel(joined.entered, body.get("zone"), self)
        except DomainError as exc:
            self._error(exc.code, exc.message)  # still where it was
            return
        self._welcome(Joined(entered, joined.character_id, joined.last_seq))

    def _welcome(self, joined: Joined) -> None:
        self._joined = joined
        self._deadline = trio.current_time() + self._settings.world_idle_timeout_s
        entered = joined.entered
        admission = entered.admission
        character = {**character_json(entered.character), "zone_id": admission.zone_id,
                     "x": admission.x, "y": admission.y}
        self.outlet.send(orjson.dumps({
            "type": "welcome", "zone": admission.zone_id, "tick": admission.tick,
            "tick_rate": admission.tick_rate_hz, "character": character}))

    def _move(self, body: dict[str, Any]) -> None:
        joined = self._joined
        if joined is None:
            self._error("not_joined", "join a character before moving")
            return
        dx, dy, seq = body.get("dx"), body.get("dy"), body.get("seq")
        if (type(dx) not in _NUMBERS or type(dy) not in _NUMBERS
                or not (math.isfinite(dx) and math.isfinite(dy))):
            self._error("validation_failed", "dx and dy must be finite numbers")
        elif type(seq) is not int or seq < 0:
            self._error("validation_failed", "seq must be a non-negative integer")
        elif seq <= joined.last_seq:
            self._error("validation_failed", f"seq must increase (last was {joined.last_seq})")
        else:
            joined.last_seq = seq
            joined.zone.move(joined.character_id, float(dx), float(dy), seq)

    def _leave(self) -> None:
        if self._joined is not None:
            self._joined.zone.leave(self._joined.character_id, self)
            self._joined = None

    def _error(self, code: str, message: str) -> None:
        self.outlet.send(error_message(code, message))


def _not_json(payload: bytes) -> tuple[str, str]:
    """The error for a message orjson refused: NaN, Infinity or a number too large for a
    double are JSON-ish (the stdlib reads them) but not finite numbers."""
    try:
        json.loads(payload)
    except ValueError:
        return "bad_json", "the message is not valid JSON"
    return "validation_failed", "numbers must be finite"
