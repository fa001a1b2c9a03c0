"""The world over real WebSockets (docs/protocol.md, "World (WebSocket)").

Covers: two players see each other move; every error path (join, message and
move errors keep the socket open); ping/pong; 4009 on a second join; 401 on the
upgrade and 4001 when the token expires; 4008 for oversized frames, floods, no
join and idleness; the Origin allowlist; positions restored after a reconnect and
checkpointed while connected; player.moved on NATS; a client that never reads
neither delays the others' snapshots nor stays connected; GET /v1/world/zones;
no server log holds a token from a query string; the world's path on a kept-alive
HTTP connection.

Rules: an in-process api with the zone in-process (`Roles(zones=...)`), real
services, trio-websocket as the client (raw sockets where a client must misbehave).
Waits are bounded (`trio.fail_after`); nothing sleeps to let time pass except
where the server's own clock must run out (timeouts set to fractions of a second).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    open_websocket_url,
)

from auth.tokens import Tokens
from persistence.characters import Character, get_character
from server.config import Settings
from server.process import Roles, Running
from server.ws import codec as ws
from tests.helpers import bearer, eventually, register, running_process, use_api_loop
from tests.processes import process_env, started
from zones.actor import Entrant

Message = dict[str, Any]


@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    async with running_process(settings, nursery,
                               Roles(zones=(settings.world_zone_id,))) as running:
        use_api_loop(running)
        yield running


@pytest.fixture
async def http(world: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as client:
        yield client


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


def ws_url(running: Running, token: str | None = None) -> str:
    base = running.url.replace("http://", "ws://") + "/v1/world/ws"
    return f"{base}?token={token}" if token else base


async def send(conn: WebSocketConnection, message: Message) -> None:
    await conn.send_message(orjson.dumps(message).decode())


async def next_of(conn: WebSocketConnection, kind: str) -> Message:
    """The next message of type `kind`, skipping others (snapshots mostly)."""
    with trio.fail_after(5):
        while True:
            message = orjson.loads(await conn.get_message())
            if message["type"] == kind:
                return message


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
                        predicate: Any) -> Message:
    """The first snapshot whose entry for `character_id` satisfies `predicate`."""
    with trio.fail_after(5):
        while True:
            snapshot = await next_of(conn, "snapshot")
            for entry in snapshot["players"]:
                if entry["id"] == character_id and predicate(entry):
                    return snapshot


async def test_two_players_see_each_other_move(world: Running, http: httpx.AsyncClient) -> None:
    ada, bob = await new_player(http, "Ada"), await new_player(http, "Bob")
    async with (connect(ws_url(world, ada["token"])) as a,
                connect(ws_url(world, bob["token"])) as b):
        welcome = await joined(a, ada["character"]["id"])
        assert welcome["zone"] == "z1" and welcome["tick_rate"] == 20.0
        assert isinstance(welcome["tick"], int)
        assert welcome["character"] == {**ada["character"], "x": 0.0, "y": 0.0}
        await joined(b, bob["character"]["id"])

        await send(a, {"type": "move", "dx": 1.5, "dy": -0.5, "seq": 1})
        seen = await snapshot_with(b, ada["character"]["id"], lambda e: e["seq"] >= 1)
        entries = {e["id"]: e for e in seen["players"]}
        assert entries[ada["character"]["id"]] == {
            "id": ada["character"]["id"], "name": "Ada", "x": 1.5, "y": -0.5, "seq": 1}
        assert entries[bob["character"]["id"]]["seq"] == 0
        assert seen["zone"] == "z1"
        # The mover sees its own input acknowledged too.
        await snapshot_with(a, ada["character"]["id"], lambda e: e["seq"] == 1)


async def test_a_long_move_is_scaled_to_the_max_step(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    async with connect(ws_url(world, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
        await send(conn, {"type": "move", "dx": 300.0, "dy": 400.0, "seq": 1})
        snapshot = await snapshot_with(conn, me["character"]["id"], lambda e: e["seq"] == 1)
    [entry] = [e for e in snapshot["players"] if e["id"] == me["character"]["id"]]
    step = settings.world_max_step
    assert (entry["x"], entry["y"]) == (pytest.approx(0.6 * step), pytest.approx(0.8 * step))


async def test_join_errors_keep_the_socket_open(world: Running, http: httpx.AsyncClient) -> None:
    me, other = await new_player(http), await new_player(http)
    async with connect(ws_url(world, me["token"])) as conn:
        for join, code in [
            ({"character_id": str(uuid.uuid4())}, "not_found"),
            ({"character_id": other["character"]["id"]}, "forbidden"),
            ({"character_id": "not-a-uuid"}, "validation_failed"),
            ({"character_id": 42}, "validation_failed"),
            ({}, "validation_failed"),
        ]:
            error = await error_for(conn, {"type": "join", **join})
            assert error["code"] == code, (join, error)
            assert error["message"]
        assert (await joined(conn, me["character"]["id"]))["character"]["id"] == \
            me["character"]["id"]


@pytest.mark.parametrize(("message", "code"), [
    ("{not json", "bad_json"),
    ("[1, 2]", "bad_json"),
    ('{"type": "move", "dx": NaN, "dy": 0, "seq": 5}', "validation_failed"),
    ('{"type": "move", "dx": Infinity, "dy": 0, "seq": 5}', "validation_failed"),
    ('{"type": "move", "dx": 1e999, "dy": 0, "seq": 5}', "validation_failed"),
    ({"type": "dance"}, "validation_failed"),
    ({"no": "type"}, "validation_failed"),
    ({"type": "move", "dx": "1", "dy": 0, "seq": 5}, "validation_failed"),
    ({"type": "move", "dx": True, "dy": 0, "seq": 5}, "validation_failed"),
    ({"type": "move", "dx": None, "dy": 0, "seq": 5}, "validation_failed"),
    ({"type": "move", "dy": 0, "seq": 5}, "validation_failed"),
    ({"type": "move", "dx": 1, "dy": 0}, "validation_failed"),
    ({"type": "move", "dx": 1, "dy": 0, "seq": 1.5}, "validation_failed"),
    ({"type": "move", "dx": 1, "dy": 0, "seq": -1}, "validation_failed"),
    ({"type": "move", "dx": 1, "dy": 0, "seq": True}, "validation_failed"),
    ({"type": "move", "dx": 1, "dy": 0, "seq": 3}, "validation_failed"),  # not increasing
])
async def test_bad_messages_are_errors_and_the_socket_stays_open(
    world: Running, http: httpx.AsyncClient, message: Message | str, code: str
) -> None:
    me = await new_player(http)
    async with connect(ws_url(world, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
        await send(conn, {"type": "move", "dx": 0.1, "dy": 0.0, "seq": 4})
        error = await error_for(conn, message)
        assert error["code"] == code, error
        await still_open(conn)


async def test_move_before_join_and_binary_frames(
    world: Running, http: httpx.AsyncClient
) -> None:
    me = await new_player(http)
    async with connect(ws_url(world, me["token"])) as conn:
        error = await error_for(conn, {"type": "move", "dx": 1, "dy": 0, "seq": 1})
        assert error["code"] == "not_joined"
        await conn.send_message(b'{"type": "ping"}')
        assert (await next_of(conn, "error"))["code"] == "validation_failed"
        await still_open(conn)


async def test_ping_echoes_anything(world: Running, http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    async with connect(ws_url(world, me["token"])) as conn:
        for t in (1, "x", {"a": [1, 2]}, None):
            await send(conn, {"type": "ping", "t": t})
            assert await next_of(conn, "pong") == {"type": "pong", "t": t}


async def test_a_second_join_closes_the_older_socket_with_4009(
    world: Running, http: httpx.AsyncClient
) -> None:
    me = await new_player(http)
    character_id = me["character"]["id"]
    async with connect(ws_url(world, me["token"])) as older:
        await joined(older, character_id)
        await send(older, {"type": "move", "dx": 2.0, "dy": 0.0, "seq": 1})
        await snapshot_with(older, character_id, lambda e: e["seq"] == 1)
        async with connect(ws_url(world, me["token"])) as newer:
            welcome = await joined(newer, character_id)
            assert welcome["character"]["x"] == 2.0, "the newer session goes on from there"
            assert await close_code(older) == 4009
            await send(newer, {"type": "move", "dx": 1.0, "dy": 0.0, "seq": 1})
            await snapshot_with(newer, character_id, lambda e: e["x"] == 3.0)


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c"])
async def test_a_bad_token_is_refused_on_upgrade(world: Running, token: str | None) -> None:
    # By hand: trio-websocket leaks the socket of a refused upgrade.
    stream, head = await raw_upgrade(world, token)
    async with stream:
        assert head.startswith(b"HTTP/1.1 401"), head
        body = head.partition(b"\r\n\r\n")[2]
        while len(body) < int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]):
            body += await stream.receive_some(65536)
    assert orjson.loads(body)["error"]["code"] == "unauthenticated"


async def test_the_token_may_come_in_the_header(world: Running, http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    headers = [(b"Authorization", f"Bearer {me['token']}".encode())]
    async with connect(ws_url(world), extra_headers=headers) as conn:
        await joined(conn, me["character"]["id"])


async def test_an_expired_token_closes_with_4001_and_saves_the_position(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    short = Tokens(settings.jwt_secret, ttl_s=2).issue(uuid.UUID(me["user_id"]))
    character_id = me["character"]["id"]
    async with connect(ws_url(world, short)) as conn:
        await joined(conn, character_id)
        await send(conn, {"type": "move", "dx": 0.0, "dy": 4.0, "seq": 1})
        await snapshot_with(conn, character_id, lambda e: e["seq"] == 1)
        assert await close_code(conn) == 4001
    await saved_at(world, character_id, 0.0, 4.0)


async def saved_at(running: Running, character_id: str, x: float, y: float) -> None:
    async def saved() -> bool:
        row = await running.services.pg.transact(get_character, uuid.UUID(character_id))
        return row is not None and (row.x, row.y) == (x, y)

    await eventually(saved, f"the position ({x}, {y}) saved")


async def test_position_is_restored_after_a_reconnect(
    world: Running, http: httpx.AsyncClient
) -> None:
    me = await new_player(http)
    character_id = me["character"]["id"]
    async with connect(ws_url(world, me["token"])) as conn:
        await joined(conn, character_id)
        for seq in (1, 2):
            await send(conn, {"type": "move", "dx": 1.5, "dy": 1.0, "seq": seq})
        await snapshot_with(conn, character_id, lambda e: e["seq"] == 2)
    async with connect(ws_url(world, me["token"])) as conn:
        welcome = await joined(conn, character_id)
    assert (welcome["character"]["x"], welcome["character"]["y"]) == (3.0, 2.0)
    await saved_at(world, character_id, 3.0, 2.0)
    listed = await http.get("/v1/characters", headers=bearer(me["token"]))
    assert [(c["x"], c["y"]) for c in listed.json()["characters"]] == [(3.0, 2.0)]


async def test_positions_are_checkpointed_while_connected(
    settings: Settings, nursery: trio.Nursery
) -> None:
    quick = dataclasses.replace(settings, world_checkpoint_s=0.2)
    async with (running_process(quick, nursery, Roles(zones=("z1",))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        use_api_loop(running)
        me = await new_player(http)
        async with connect(ws_url(running, me["token"])) as conn:
            await joined(conn, me["character"]["id"])
            await send(conn, {"type": "move", "dx": -2.0, "dy": 0.0, "seq": 1})
            await saved_at(running, me["character"]["id"], -2.0, 0.0)


async def raw_upgrade(running: Running, token: str | None, *, origin: str | None = None,
                      rcvbuf: int | None = None) -> tuple[trio.SocketStream, bytes]:
    """A hand-made upgrade request; the stream and the response head."""
    host, port = running.url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    target = "/v1/world/ws" + (f"?token={token}" if token is not None else "")
    await stream.send_all(upgrade_request(host, target, origin))
    return stream, await received_until(stream, b"\r\n\r\n")


def upgrade_request(host: str, target: str, origin: str | None = None) -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Origin: {origin}\r\n" if origin else "") + "\r\n").encode()


async def received_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    """What the server sent, up to and including `marker` (and what came with it)."""
    data = b""
    with trio.fail_after(5):
        while marker not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed before {marker!r}: {data!r}"
            data += chunk
    return data


def client_frame(payload: bytes, opcode: int = ws.TEXT) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    header = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126
                                       else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return header + mask + ws.unmask(payload, mask)


async def server_close_code(stream: trio.SocketStream) -> int:
    """Read server frames until a close frame; its code."""
    reader = b""
    with trio.fail_after(10):
        while True:
            reader += await stream.receive_some(65536)
            offset = 0
            while len(reader) - offset >= 2:
                opcode, length = reader[offset] & 0x0F, reader[offset + 1] & 0x7F
                start = offset + 2 + (2 if length == 126 else 8 if length == 127 else 0)
                if length >= 126:
                    length = int.from_bytes(reader[offset + 2:start], "big")
                if len(reader) < start + length:
                    break
                if opcode == ws.CLOSE:
                    return int.from_bytes(reader[start:start + 2], "big")
                offset = start + length
            reader = reader[offset:]


async def test_tokens_in_the_query_string_never_reach_the_logs(
    world: Running, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    me = await new_player(http)
    tampered = me["token"][:-4] + "AAAA"
    async with connect(ws_url(world, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
    stream, head = await raw_upgrade(world, tampered)
    async with stream:
        assert head.startswith(b"HTTP/1.1 401"), head
    not_upgraded = await http.get(f"/v1/world/ws?token={me['token']}")
    assert not_upgraded.status_code == 400
    listed = await http.get(f"/v1/characters?token={me['token']}")
    assert listed.status_code == 401  # the query string is no way to call the HTTP API
    # The test's own clients log their URLs; what counts is what the server logs.
    clients = ("httpx", "httpcore", "trio-websocket")
    server = [r for r in caplog.records if not r.name.startswith(clients)]
    assert server, "the server logged nothing at all: this test would prove nothing"
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in server)
    for token in (me["token"], tampered, me["token"].split(".")[2]):
        assert token not in logged


@pytest.mark.parametrize("origin, status", [
    ("https://good.example", b"101"), ("https://evil.example", b"403"), (None, b"101")])
async def test_the_origin_allowlist(
    settings: Settings, nursery: trio.Nursery, origin: str | None, status: bytes
) -> None:
    strict = dataclasses.replace(settings, world_allowed_origins=("https://good.example",))
    async with (running_process(strict, nursery, Roles(zones=("z1",))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        me = await new_player(http)
        stream, head = await raw_upgrade(running, me["token"], origin=origin)
        async with stream:
            assert head.split(b" ")[1] == status, head
            if status == b"403":
                assert b'"code":"forbidden"' in head + await stream.receive_some(65536)


async def test_an_oversized_frame_closes_with_4008(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    stream, head = await raw_upgrade(world, me["token"])
    async with stream:
        assert head.startswith(b"HTTP/1.1 101")
        await stream.send_all(client_frame(b"x" * (settings.world_max_message_bytes + 1)))
        assert await server_close_code(stream) == 4008


async def test_a_flood_of_messages_closes_with_4008(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    stream, _ = await raw_upgrade(world, me["token"])
    async with stream:
        flood = int(3 * settings.world_max_messages_per_s)
        await stream.send_all(client_frame(b'{"type": "ping"}') * flood)
        assert await server_close_code(stream) == 4008


async def test_no_join_in_time_and_idleness_close_with_4008(
    settings: Settings, nursery: trio.Nursery
) -> None:
    impatient = dataclasses.replace(settings, world_join_timeout_s=0.3, world_idle_timeout_s=0.3)
    async with (running_process(impatient, nursery, Roles(zones=("z1",))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        use_api_loop(running)
        me = await new_player(http)
        async with connect(ws_url(running, me["token"])) as lurker:
            assert await close_code(lurker) == 4008
        async with connect(ws_url(running, me["token"])) as idler:
            await joined(idler, me["character"]["id"])
            assert await close_code(idler) == 4008


async def test_player_moved_is_published(world: Running, http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    character_id = me["character"]["id"]
    with trio.fail_after(10):
        await world.services.bus.connected_once.wait()
    async with (world.services.bus.subscription("player.moved") as moves,
                connect(ws_url(world, me["token"])) as conn):
        welcome = await joined(conn, character_id)
        await send(conn, {"type": "move", "dx": 0.5, "dy": 0.25, "seq": 1})
        with trio.fail_after(5):
            async for message in moves:
                event = orjson.loads(message.data)
                if event["character_id"] == character_id:
                    break
    assert set(event) == {"character_id", "user_id", "zone_id", "x", "y", "tick"}
    assert (event["user_id"], event["zone_id"]) == (me["user_id"], "z1")
    assert (event["x"], event["y"]) == (0.5, 0.25)
    assert event["tick"] > welcome["tick"]


async def test_a_client_that_never_reads_does_not_delay_the_others(
    settings: Settings, nursery: trio.Nursery
) -> None:
    slow = dataclasses.replace(settings, world_slow_close_s=0.5)
    async with (running_process(slow, nursery, Roles(zones=("z1",))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        use_api_loop(running)
        zone = running.services.world.zones["z1"]
        # Make snapshots big (~200 KB) so that a client that never reads fills its
        # socket buffers within a few ticks: silent members with an outlet that drops all.
        for i in range(2000):
            await zone.join(Entrant(str(uuid.uuid4()), str(uuid.uuid4()), f"npc{i}", 0, 0),
                            _Silent())
        stuck, reader = await new_player(http, "Stuck"), await new_player(http, "Reader")
        stream, _ = await raw_upgrade(running, stuck["token"], rcvbuf=4096)
        async with stream, connect(ws_url(running, reader["token"]),
                                              max_message_size=1 << 22) as conn:
            await stream.send_all(client_frame(orjson.dumps(
                {"type": "join", "character_id": stuck["character"]["id"]})))
            await joined(conn, reader["character"]["id"])
            ticks = [(await next_of(conn, "snapshot"))["tick"] for _ in range(40)]
            assert ticks == list(range(ticks[0], ticks[0] + 40)), "a snapshot was skipped"

            async def dropped() -> bool:
                return stuck["character"]["id"] not in zone._outlets

            await eventually(dropped, "the stuck client to be dropped")
            assert reader["character"]["id"] in zone._outlets


class _Silent:
    def snapshot(self, payload: bytes) -> None:
        pass

    def replaced(self) -> None:
        pass


async def test_world_zones_lists_the_zone(world: Running, http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    async with connect(ws_url(world, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
        listed = (await http.get("/v1/world/zones")).json()["zones"]
    [zone] = listed
    assert (zone["zone"], zone["up"], zone["players"], zone["tick_rate"]) == ("z1", True, 1, 20.0)
    assert zone["tick_ms"]["p50"] is not None and zone["tick"] > 0


async def test_plain_http_on_the_world_path_is_refused(world: Running) -> None:
    async with httpx.AsyncClient(base_url=world.url) as http:
        first = await http.get("/v1/world/ws")
        kept_alive = await http.get("/v1/world/ws")  # the same connection: hypercorn's now
    for response in (first, kept_alive):
        assert response.status_code == 400
        assert response.json()["error"] == {"code": "validation_failed",
                                             "message": "this endpoint only speaks WebSocket"}


async def test_an_upgrade_on_a_kept_alive_connection_is_refused(world: Running) -> None:
    host, port = world.url.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await received_until(stream, b'"status":"ok"')
        await stream.send_all(upgrade_request(host, "/v1/world/ws"))
        refusal = await received_until(stream, b"open the WebSocket as the first request")
        assert refusal.startswith(b"HTTP/1.1 400"), refusal




async def test_sigterm_saves_every_position_and_says_going_away(
    settings: Settings, tmp_path: Path
) -> None:
    env = process_env(settings, OUTPOST_DATA_DIR=str(tmp_path / "data"))
    async with started(tmp_path, "dev", env=env) as api:  # the api with its zone in-process
        running = _remote(api.url)
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            players = [await new_player(http, f"Term{i}") for i in range(3)]
        async with AsyncExitStack() as sockets:
            conns = [await sockets.enter_async_context(connect(ws_url(running, p["token"])))
                     for p in players]
            for i, (conn, player) in enumerate(zip(conns, players, strict=True)):
                await joined(conn, player["character"]["id"])
                await send(conn, {"type": "move", "dx": 1.0 + i, "dy": -1.0, "seq": 1})
                await snapshot_with(conn, player["character"]["id"], lambda e: e["seq"] == 1)
            api.process.send_signal(signal.SIGTERM)
            assert [await close_code(conn) for conn in conns] == [1001, 1001, 1001]
        with trio.fail_after(30):
            assert await api.process.wait() == 0
    rows = await stored_characters(settings, [p["character"]["id"] for p in players])
    assert [(row.x, row.y) for row in rows] == [(1.0, -1.0), (2.0, -1.0), (3.0, -1.0)]


def _remote(url: str) -> Running:
    """Enough of a Running for ws_url() to address a process of its own."""
    return Running(url, None)  # type: ignore[arg-type]


async def stored_characters(settings: Settings, ids: list[str]) -> list[Character]:
    """Character rows read straight from Postgres on a connection of our own."""
    async with trio_asyncio.open_loop():
        conn = await aio_as_trio(asyncpg.connect)(settings.database_url)
        try:
            return [await aio_as_trio(get_character)(conn, uuid.UUID(i)) for i in ids]
        finally:
            await aio_as_trio(conn.close)()
