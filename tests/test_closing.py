"""Every close the server starts reaches a client that keeps sending (docs/protocol.md,
"World (WebSocket)", close codes; server/ws/session.py, "closing").

A server that closes a socket whose input it has not read makes the kernel answer
with a reset, and the reset destroys the close frame (or HTTP refusal) still in
flight. So each test here floods the server first and reads only afterwards, the
way a busy client does: 4008 for a message flood, a frame too large, no join in
time and idleness; 4009 when the character is taken over; 4001 at token expiry;
1001 when the server stops; and the HTTP refusals of an upgrade (401, 403, 400)
followed by bytes the server will never parse.

Rules: an in-process api with its zone, real sockets over loopback, the hand-made
client of bench/rawws.py. A flood is bounded (by time or bytes); every wait is
bounded. A reset shows up as trio.BrokenResourceError and fails the test. A deadline
under test is short and the flood goes on a second past it; any other deadline keeps
its default, so that nothing the test does first races it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from functools import partial

import httpx
import orjson
import pytest
import trio

from auth.tokens import Tokens
from bench.rawws import client_frame, close_of, received_until, upgrade_request
from server.config import Settings
from server.process import Roles, Running, run_process
from server.ws import codec
from tests.helpers import running_process, use_api_loop
from tests.world import (
    FLOOD_S,
    WORLD_PATH,
    connect,
    crowd,
    flood,
    joined,
    joined_raw,
    leftover,
    new_player,
    raw_upgrade,
    ws_url,
)

# Every test on the C wire module and on its pure-Python twin (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("wire_impl")

PING = client_frame(b"are you there", codec.PING)  # no message: a flood that waits for a close
# Floods of pings would be cut short by the frame rate (4008 "too many frames", tested in
# tests/test_hostile.py); here the closes under test must come while a flood goes on.
FLOODABLE = 1e9
QUICK_S = 0.3  # a timeout under test: it runs out early in a flood of QUICK_S + FLOOD_S
# JWT times are whole seconds: a token of this lifetime has 2 to 3 s left, for the join
# (milliseconds) to come before it expires, and a flood of TOKEN_TTL_S + FLOOD_S after.
TOKEN_TTL_S = 3


@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    floodable = dataclasses.replace(settings, world_max_frames_per_s=FLOODABLE)
    async with running_process(floodable, nursery, Roles(zones=("z1",))) as running:
        use_api_loop(running)
        yield running


@pytest.fixture
async def join_soon(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    """A world whose first-join timeout runs out while a flood goes on."""
    quick = dataclasses.replace(settings, world_join_timeout_s=QUICK_S,
                                world_max_frames_per_s=FLOODABLE)
    async with running_process(quick, nursery, Roles(zones=("z1",))) as running:
        use_api_loop(running)
        yield running


@pytest.fixture
async def idle_soon(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    """A world whose idle timeout runs out while a flood goes on; the join before it has
    the usual time."""
    quick = dataclasses.replace(settings, world_idle_timeout_s=QUICK_S,
                                world_max_frames_per_s=FLOODABLE)
    async with running_process(quick, nursery, Roles(zones=("z1",))) as running:
        use_api_loop(running)
        yield running


async def test_a_message_flood_gets_4008_behind_snapshots_it_has_not_read(
    world: Running
) -> None:
    """The close frame waits behind a snapshot the client has not read yet: the server
    must neither drop it nor reset the connection while the flood goes on."""
    await crowd(world, 2000)  # ~200 KB snapshots: a client that stops reading is behind
    async with httpx.AsyncClient(base_url=world.url) as http:
        me = await new_player(http)
    stream = await joined_raw(world.url, me["token"], me["character"]["id"], rcvbuf=4096)
    async with stream:
        move = client_frame(b'{"type":"move","dx":0.1,"dy":0,"seq":1}')
        assert await flood(stream, move * 64) > 0
        assert await close_of(stream) == (4008, "too many messages")


async def test_a_frame_too_large_gets_4008(world: Running, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=world.url) as http:
        me = await new_player(http)
    stream, head = await raw_upgrade(world.url, me["token"])
    async with stream:
        size = 1 << 20  # far over WORLD_MAX_MESSAGE_BYTES, all of it sent
        assert size > settings.world_max_message_bytes
        header = client_frame(b"", length=size)[:-4] + b"mask"
        await stream.send_all(header)
        assert await flood(stream, b"x" * 65536, limit_bytes=size) >= size
        assert await close_of(stream, leftover(head)) == (4008, "frame too large")


async def test_no_join_in_time_gets_4008_through_a_ping_flood(join_soon: Running) -> None:
    async with httpx.AsyncClient(base_url=join_soon.url) as http:
        me = await new_player(http)
    stream, head = await raw_upgrade(join_soon.url, me["token"])
    async with stream:
        await flood(stream, PING * 64, seconds=QUICK_S + FLOOD_S)
        assert await close_of(stream, leftover(head)) == (4008, "no join in time")


async def test_idleness_gets_4008_through_a_ping_flood(idle_soon: Running) -> None:
    async with httpx.AsyncClient(base_url=idle_soon.url) as http:
        me = await new_player(http)
    stream = await joined_raw(idle_soon.url, me["token"], me["character"]["id"])
    async with stream:
        await flood(stream, PING * 64, seconds=QUICK_S + FLOOD_S)
        assert await close_of(stream) == (4008, "idle for too long")


async def test_a_takeover_gets_4009_while_flooding(world: Running) -> None:
    async with httpx.AsyncClient(base_url=world.url) as http:
        me = await new_player(http)
    character_id = me["character"]["id"]
    stream = await joined_raw(world.url, me["token"], character_id)
    async with stream:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(flood, stream, PING * 64, seconds=1.5 * FLOOD_S))
            async with connect(ws_url(world.url, me["token"])) as newer:
                await joined(newer, character_id)
        assert await close_of(stream) == (4009, "replaced by a newer session")


async def test_token_expiry_gets_4001_while_flooding(world: Running, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=world.url) as http:
        me = await new_player(http)
    short = Tokens(settings.jwt_keys, ttl_s=TOKEN_TTL_S).issue(uuid.UUID(me["user_id"]),
                                                                 uuid.uuid4())
    stream = await joined_raw(world.url, short, me["character"]["id"])
    async with stream:
        await flood(stream, PING * 64, seconds=TOKEN_TTL_S + FLOOD_S)
        assert await close_of(stream) == (4001, "the token has expired")


async def test_a_stopping_server_says_1001_while_clients_flood(
    settings: Settings, nursery: trio.Nursery
) -> None:
    shutdown = trio.Event()
    # A zone of its own: one stopped mid-flood may hold its lease a while (a later test's,
    # or this test's on the other wire, would stand by behind it).
    zone = f"z-{uuid.uuid4().hex[:8]}"
    floodable = dataclasses.replace(settings, world_max_frames_per_s=FLOODABLE,
                                    world_zone_id=zone)
    running = await nursery.start(partial(run_process, floodable, shutdown=shutdown,
                                          roles=Roles(zones=(zone,))))
    use_api_loop(running)
    async with httpx.AsyncClient(base_url=running.url) as http:
        me = await new_player(http)
    stream = await joined_raw(running.url, me["token"], me["character"]["id"])
    async with stream:
        async with trio.open_nursery() as flooding:
            flooding.start_soon(flood, stream, PING * 64)
            await trio.sleep(FLOOD_S / 4)
            shutdown.set()
        assert await close_of(stream) == (1001, "server going away")


@pytest.mark.parametrize("origin, token, version, status", [
    (None, "not-a-token", "13", b"401"),
    ("https://evil.example", None, "13", b"403"),
    (None, None, "8", b"400"),  # a WebSocket version this server does not speak
])
async def test_refused_upgrades_reach_a_client_that_keeps_sending(
    settings: Settings, nursery: trio.Nursery, origin: str | None, token: str | None,
    version: str, status: bytes
) -> None:
    strict = dataclasses.replace(settings, world_allowed_origins=("https://good.example",))
    token = token or Tokens(settings.jwt_keys, ttl_s=60).issue(uuid.uuid4(), uuid.uuid4())
    request = upgrade_request("x", f"{WORLD_PATH}?token={token}", origin=origin).replace(
        b"Sec-WebSocket-Version: 13", f"Sec-WebSocket-Version: {version}".encode())
    async with running_process(strict, nursery, Roles()) as running:
        host, port = running.url.removeprefix("http://").split(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(request)
            await flood(stream, PING * 64)  # as if upgraded: frames right behind the request
            answer = await received_until(stream, b"}}")
    assert answer.split(b" ")[1] == status, answer
    body = orjson.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] in {"unauthenticated", "forbidden", "validation_failed"}
