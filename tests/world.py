"""Helpers the world's test modules share: players as a client makes them, the world's
WebSocket through trio-websocket (and, for misbehaving clients, the hand-made one in
bench/rawws.py), reading messages by type in v1 and v2 (bench/v2.py), and rows read
straight from Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from bench import v2
from bench.rawws import client_frame, open_upgraded, received_until
from characters.store import Character, get_character
from server.config import Settings
from server.process import Running
from tests.helpers import bearer, eventually, register
from zones.actor import Entrant
from zones.interest import View

Message = dict[str, Any]
WORLD_PATH = "/v1/world/ws"


async def new_player(http: httpx.AsyncClient, name: str = "Walker") -> dict[str, Any]:
    """A registered user with one character: its token, user_id and character."""
    user = await register(http)
    created = await http.post("/v1/characters", json={"name": name},
                              headers=bearer(user["token"]))
    assert created.status_code == 201, created.text
    return {**user, "character": created.json()}


@asynccontextmanager
async def connect(url: str, **options: Any) -> AsyncIterator[WebSocketConnection]:
    """trio-websocket's client, plus closing its socket: after a close the server began,
    trio-websocket leaves it open (a ResourceWarning, which this suite makes an error).
    A test may stop reading: a roomy queue keeps trio-websocket's reader task from
    blocking on it (it would then never see the server's close reply, and hang)."""
    async with open_websocket_url(url, message_queue_size=10_000, **options) as conn:
        try:
            yield conn
        finally:
            await conn._stream.aclose()


def ws_url(http_url: str, token: str | None = None) -> str:
    """The world's WebSocket URL on the API at `http_url`, with the token in the query."""
    base = http_url.replace("http://", "ws://") + WORLD_PATH
    return f"{base}?token={token}" if token else base


async def raw_upgrade(http_url: str, token: str | None, *, origin: str | None = None,
                      rcvbuf: int | None = None, protocol: str | None = None
                      ) -> tuple[trio.SocketStream, bytes]:
    """A hand-made upgrade of the world's path; the stream and the response head (with
    what came after it)."""
    target = WORLD_PATH + (f"?token={token}" if token is not None else "")
    return await open_upgraded(http_url, target, origin=origin, rcvbuf=rcvbuf,
                               protocol=protocol)


FLOOD_S = 1.0


async def flood(stream: trio.SocketStream, frame: bytes, *, seconds: float = FLOOD_S,
                limit_bytes: int | None = None) -> int:
    """Send `frame` again and again without reading, for `seconds` (or `limit_bytes`);
    the bytes sent. A reset while sending is what a WebSocket library reports as an
    abnormal closure (1006) before it reads the close frame: it fails the test."""
    sent = 0
    with trio.move_on_after(seconds):
        while limit_bytes is None or sent < limit_bytes:
            try:
                await stream.send_all(frame)
            except trio.BrokenResourceError as exc:
                pytest.fail(f"the server reset the connection after {sent} bytes: {exc!r}")
            sent += len(frame)
    return sent


def leftover(head: bytes) -> bytes:
    return head.partition(b"\r\n\r\n")[2]


async def joined_raw(http_url: str, token: str, character_id: str, *,
                     rcvbuf: int | None = None) -> trio.SocketStream:
    """A hand-made v1 socket whose character is in the world (its welcome read)."""
    stream, head = await raw_upgrade(http_url, token, rcvbuf=rcvbuf)
    assert head.startswith(b"HTTP/1.1 101"), head
    await stream.send_all(client_frame(orjson.dumps(
        {"type": "join", "character_id": character_id})))
    await received_until(stream, b'"type":"welcome"')
    return stream


async def send(conn: WebSocketConnection, message: Message) -> None:
    await conn.send_message(orjson.dumps(message).decode())


async def next_of(conn: WebSocketConnection, kind: str, *, within_s: float = 5) -> Message:
    """The next message of type `kind`, skipping others (snapshots mostly)."""
    with trio.fail_after(within_s):
        while True:
            message = orjson.loads(await conn.get_message())
            if message["type"] == kind:
                return message


async def send2(conn: WebSocketConnection, message: Message) -> None:
    """A v2 message: MessagePack in a binary frame."""
    await conn.send_message(v2.encode(message))


async def next2(conn: WebSocketConnection, kind: str) -> Message:
    """The next v2 message of type `kind`, skipping others."""
    with trio.fail_after(5):
        while True:
            raw = await conn.get_message()
            assert isinstance(raw, bytes), f"a v2 server sends binary frames, not {raw!r}"
            message = v2.decode(raw)
            if message["type"] == kind:
                return message


async def joined2(conn: WebSocketConnection, character_id: str) -> Message:
    await send2(conn, {"type": "join", "character_id": character_id})
    return await next2(conn, "welcome")


async def joined(conn: WebSocketConnection, character_id: str) -> Message:
    await send(conn, {"type": "join", "character_id": character_id})
    return await next_of(conn, "welcome")


async def error_for(conn: WebSocketConnection, message: Message | str) -> Message:
    if isinstance(message, str):
        await conn.send_message(message)
    else:
        await send(conn, message)
    return await next_of(conn, "error")


async def still_open(conn: WebSocketConnection) -> None:
    token = uuid.uuid4().hex
    await send(conn, {"type": "ping", "t": token})
    assert (await next_of(conn, "pong"))["t"] == token


async def close_code(conn: WebSocketConnection) -> int:
    """Read until the server closes the socket; its close code."""
    with trio.fail_after(10):
        try:
            while True:
                await conn.get_message()
        except ConnectionClosed as closed:
            assert closed.reason is not None
            return closed.reason.code


async def snapshot_with(conn: WebSocketConnection, character_id: str,
                        predicate: Callable[[Message], bool]) -> Message:
    """The first snapshot whose entry for `character_id` satisfies `predicate`."""
    with trio.fail_after(5):
        while True:
            snapshot = await next_of(conn, "snapshot")
            for entry in snapshot["players"]:
                if entry["id"] == character_id and predicate(entry):
                    return snapshot


async def follow(conn: WebSocketConnection, view: v2.PlayerView, ticks: dict[int, Any],
                 until: int) -> None:
    """Apply every snapshot to `view` (asserting the eid rule), keeping its positions by
    tick, until `until` ticks were seen."""
    while len(ticks) < until:
        raw = await conn.get_message()
        assert isinstance(raw, bytes)
        message = v2.decode(raw)
        if message["type"] != "snapshot":
            continue
        if message["base"] is not None:
            for eid, _, _ in message["enter"]:
                assert eid not in view.players, f"eid {eid} reused before its leave"
        view.apply(message)
        ticks[message["tick"]] = view.positions()


async def record_v1(conn: WebSocketConnection, ticks: dict[int, Any], until: int) -> None:
    while len(ticks) < until:
        snapshot = await next_of(conn, "snapshot")
        ticks[snapshot["tick"]] = {p["id"]: (p["x"], p["y"], p["seq"])
                                   for p in snapshot["players"]}


def same_views(v1_ticks: dict[int, Any], v2_ticks: dict[int, Any]) -> int:
    """Check that at every tick both recorded, the v1 snapshot and the v2 view list the
    same players at the same positions (v2's are float32) and seqs; how many ticks."""
    both = v1_ticks.keys() & v2_ticks.keys()
    for tick in both:
        assert v2_ticks[tick].keys() == v1_ticks[tick].keys(), tick
        for character_id, (x, y, seq) in v1_ticks[tick].items():
            assert v2_ticks[tick][character_id] == (pytest.approx(x, abs=1e-3),
                                                    pytest.approx(y, abs=1e-3), seq)
    return len(both)


async def saved_at(running: Running, character_id: str, x: float, y: float) -> None:
    async def saved() -> bool:
        row = await running.services.pg.transact(get_character, uuid.UUID(character_id))
        return row is not None and (row.x, row.y) == (x, y)

    await eventually(saved, f"the position ({x}, {y}) saved")


class Silent:
    """A zone member whose outlet drops everything: a crowd that costs only bytes."""

    def snapshot(self, view: View) -> None:
        """Dropped."""

    def replaced(self) -> None:
        pass

    def refused(self, code: str, message: str, seq: int) -> None:
        pass


async def crowd(running: Running, n: int) -> list[str]:
    """`n` silent members in the running process's zone, to make its snapshots big; their
    character ids."""
    zone = running.services.world.zones[running.services.settings.world_zone_id]
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for i, character_id in enumerate(ids):
        await zone.join(Entrant(character_id, str(uuid.uuid4()), f"npc{i}", 0, 0), Silent())
    return ids


async def keep_moving(running: Running, character_ids: list[str]) -> None:
    """Move these characters of the running process's zone every tick, until cancelled."""
    zone = running.services.world.zones[running.services.settings.world_zone_id]
    for seq in range(1, 10 ** 9):
        for character_id in character_ids:
            zone.move(character_id, 0.25 if seq % 40 < 20 else -0.25, 0.0, seq)
        await trio.sleep(1 / zone.tick_rate_hz)


async def stored_characters(settings: Settings, ids: list[str]) -> list[Character]:
    """Character rows read straight from Postgres on a connection of our own (each must
    exist)."""
    async with trio_asyncio.open_loop():
        conn = await aio_as_trio(asyncpg.connect)(settings.database_url)
        try:
            rows = [await aio_as_trio(get_character)(conn, uuid.UUID(i)) for i in ids]
        finally:
            await aio_as_trio(conn.close)()
    found = [row for row in rows if row is not None]
    assert len(found) == len(ids), f"characters missing: {ids}"
    return found
