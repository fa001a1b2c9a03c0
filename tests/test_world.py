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
Waits are bounded (`trio.fail_after`); nothing sleeps to let time pass. Where the
server's own clock must run out (a token, a timeout), it is short, but long enough
for what the test does before it on a busy machine, and the close is checked not to
come before it.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from auth.tokens import Tokens
from bench.rawws import client_frame, close_of, received_until, upgrade_request
from server.config import Settings
from server.process import Roles, Running
from tests.helpers import bearer, eventually, running_process, use_api_loop
from tests.processes import process_env, started
from tests.world import (
    Message,
    close_code,
    connect,
    crowd,
    error_for,
    joined,
    new_player,
    next_of,
    raw_upgrade,
    saved_at,
    send,
    snapshot_with,
    still_open,
    stored_characters,
    ws_url,
)

# Every test on the C wire module and on its pure-Python twin (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("wire_impl")


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


async def test_two_players_see_each_other_move(world: Running, http: httpx.AsyncClient) -> None:
    ada, bob = await new_player(http, "Ada"), await new_player(http, "Bob")
    async with (connect(ws_url(world.url, ada["token"])) as a,
                connect(ws_url(world.url, bob["token"])) as b):
        welcome = await joined(a, ada["character"]["id"])
        assert welcome["zone"] == "z1" and welcome["tick_rate"] == 20.0
        assert isinstance(welcome["tick"], int)
        assert welcome["character"] == {**ada["character"], "x": 0.0, "y": 0.0}
        await joined(b, bob["character"]["id"])

        await send(a, {"type": "move", "dx": 1.5, "dy": -0.5, "seq": 1})
        seen = await snapshot_with(b, ada["character"]["id"], lambda e: e["seq"] >= 1)
        entries = {e["id"]: e for e in seen["players"]}
        assert entries[ada["character"]["id"]] == {  # hp: the shooter's replicated field
            "id": ada["character"]["id"], "name": "Ada", "x": 1.5, "y": -0.5, "seq": 1,
            "hp": 100}
        assert entries[bob["character"]["id"]]["seq"] == 0
        assert seen["zone"] == "z1"
        # The mover sees its own input acknowledged too.
        await snapshot_with(a, ada["character"]["id"], lambda e: e["seq"] == 1)


async def test_a_long_move_is_scaled_to_the_max_step(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    async with connect(ws_url(world.url, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
        await send(conn, {"type": "move", "dx": 300.0, "dy": 400.0, "seq": 1})
        snapshot = await snapshot_with(conn, me["character"]["id"], lambda e: e["seq"] == 1)
    [entry] = [e for e in snapshot["players"] if e["id"] == me["character"]["id"]]
    step = settings.world_max_step
    assert (entry["x"], entry["y"]) == (pytest.approx(0.6 * step), pytest.approx(0.8 * step))


async def test_join_errors_keep_the_socket_open(world: Running, http: httpx.AsyncClient) -> None:
    me, other = await new_player(http), await new_player(http)
    async with connect(ws_url(world.url, me["token"])) as conn:
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
    async with connect(ws_url(world.url, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
        await send(conn, {"type": "move", "dx": 0.1, "dy": 0.0, "seq": 4})
        error = await error_for(conn, message)
        assert error["code"] == code, error
        await still_open(conn)


async def test_move_before_join_and_binary_frames(
    world: Running, http: httpx.AsyncClient
) -> None:
    me = await new_player(http)
    async with connect(ws_url(world.url, me["token"])) as conn:
        error = await error_for(conn, {"type": "move", "dx": 1, "dy": 0, "seq": 1})
        assert error["code"] == "not_joined"
        await conn.send_message(b'{"type": "ping"}')
        assert (await next_of(conn, "error"))["code"] == "validation_failed"
        await still_open(conn)


async def test_ping_echoes_a_number_or_a_short_string(world: Running,
                                                      http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    async with connect(ws_url(world.url, me["token"])) as conn:
        sent: tuple[object, ...] = (1, 2.5, "x" * 64, None)
        for t in sent:
            await send(conn, {"type": "ping", "t": t})
            assert await next_of(conn, "pong") == {"type": "pong", "t": t}
        refused: tuple[object, ...] = ({"a": [1, 2]}, [1], True, "x" * 65)
        for t in refused:  # docs/protocol.md, "ping"
            error = await error_for(conn, {"type": "ping", "t": t})
            assert error["code"] == "validation_failed", error
        await still_open(conn)


async def test_a_second_join_closes_the_older_socket_with_4009(
    world: Running, http: httpx.AsyncClient
) -> None:
    me = await new_player(http)
    character_id = me["character"]["id"]
    async with connect(ws_url(world.url, me["token"])) as older:
        await joined(older, character_id)
        await send(older, {"type": "move", "dx": 2.0, "dy": 0.0, "seq": 1})
        await snapshot_with(older, character_id, lambda e: e["seq"] == 1)
        async with connect(ws_url(world.url, me["token"])) as newer:
            welcome = await joined(newer, character_id)
            assert welcome["character"]["x"] == 2.0, "the newer session goes on from there"
            assert await close_code(older) == 4009
            await send(newer, {"type": "move", "dx": 1.0, "dy": 0.0, "seq": 1})
            await snapshot_with(newer, character_id, lambda e: e["x"] == 3.0)


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c"])
async def test_a_bad_token_is_refused_on_upgrade(world: Running, token: str | None) -> None:
    # By hand: trio-websocket leaks the socket of a refused upgrade.
    stream, head = await raw_upgrade(world.url, token)
    async with stream:
        assert head.startswith(b"HTTP/1.1 401"), head
        body = head.partition(b"\r\n\r\n")[2]
        while len(body) < int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]):
            body += await stream.receive_some(65536)
    assert orjson.loads(body)["error"]["code"] == "unauthenticated"


async def test_the_token_may_come_in_the_header(world: Running, http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    headers = [(b"Authorization", f"Bearer {me['token']}".encode())]
    async with connect(ws_url(world.url), extra_headers=headers) as conn:
        await joined(conn, me["character"]["id"])


# JWT times are whole seconds: such a token has 4 to 5 s left, for a join and a move
# that take milliseconds on an idle machine.
TOKEN_TTL_S = 5


async def test_an_expired_token_closes_with_4001_and_saves_the_position(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    issued = time.time()
    short = Tokens(settings.jwt_keys, ttl_s=TOKEN_TTL_S).issue(
        uuid.UUID(me["user_id"]), uuid.uuid4(), now=issued)
    expires = int(issued) + TOKEN_TTL_S  # its exp
    character_id = me["character"]["id"]
    async with connect(ws_url(world.url, short)) as conn:
        await joined(conn, character_id)
        await send(conn, {"type": "move", "dx": 0.0, "dy": 4.0, "seq": 1})
        await snapshot_with(conn, character_id, lambda e: e["seq"] == 1)
        assert await close_code(conn) == 4001
        closed = time.time()
    # Not before exp (the server times it on its monotonic clock: a hair of drift).
    assert closed >= expires - 0.05, closed - expires
    await saved_at(world, character_id, 0.0, 4.0)


async def test_position_is_restored_after_a_reconnect(
    world: Running, http: httpx.AsyncClient
) -> None:
    me = await new_player(http)
    character_id = me["character"]["id"]
    async with connect(ws_url(world.url, me["token"])) as conn:
        await joined(conn, character_id)
        for seq in (1, 2):
            await send(conn, {"type": "move", "dx": 1.5, "dy": 1.0, "seq": seq})
        await snapshot_with(conn, character_id, lambda e: e["seq"] == 2)
    async with connect(ws_url(world.url, me["token"])) as conn:
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
        async with connect(ws_url(running.url, me["token"])) as conn:
            await joined(conn, me["character"]["id"])
            await send(conn, {"type": "move", "dx": -2.0, "dy": 0.0, "seq": 1})
            await saved_at(running, me["character"]["id"], -2.0, 0.0)


async def test_tokens_in_the_query_string_never_reach_the_logs(
    world: Running, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    me = await new_player(http)
    tampered = me["token"][:-4] + "AAAA"
    async with connect(ws_url(world.url, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
    stream, head = await raw_upgrade(world.url, tampered)
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
    ("https://good.example", b"101"), ("https://evil.example", b"403"), (None, b"101"),
    ("same", b"101"), ("http://127.0.0.1.evil.example", b"403"), ("null", b"403")])
async def test_the_origin_allowlist(
    settings: Settings, nursery: trio.Nursery, origin: str | None, status: bytes
) -> None:
    strict = dataclasses.replace(settings, world_allowed_origins=("https://good.example",))
    async with (running_process(strict, nursery, Roles(zones=("z1",))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        me = await new_player(http)
        if origin == "same":  # a page this server served (the browser client)
            origin = running.url
        stream, head = await raw_upgrade(running.url, me["token"], origin=origin)
        async with stream:
            assert head.split(b" ")[1] == status, head
            if status == b"403":
                assert b'"code":"forbidden"' in head + await stream.receive_some(65536)


async def test_an_oversized_frame_closes_with_4008(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    stream, head = await raw_upgrade(world.url, me["token"])
    async with stream:
        assert head.startswith(b"HTTP/1.1 101")
        await stream.send_all(client_frame(b"x" * (settings.world_max_message_bytes + 1)))
        assert (await close_of(stream, head.partition(b"\r\n\r\n")[2]))[0] == 4008


async def test_a_flood_of_messages_closes_with_4008(
    world: Running, http: httpx.AsyncClient, settings: Settings
) -> None:
    me = await new_player(http)
    stream, head = await raw_upgrade(world.url, me["token"])
    async with stream:
        flood = int(3 * settings.world_max_messages_per_s)
        await stream.send_all(client_frame(b'{"type": "ping"}') * flood)
        assert (await close_of(stream, head.partition(b"\r\n\r\n")[2]))[0] == 4008


# Short, for the lurker and the idler to wait out; the idler's join (milliseconds after
# its upgrade) must come within the first, on a busy machine too.
JOIN_TIMEOUT_S, IDLE_TIMEOUT_S = 2.0, 1.0


async def test_no_join_in_time_and_idleness_close_with_4008(
    settings: Settings, nursery: trio.Nursery
) -> None:
    impatient = dataclasses.replace(settings, world_join_timeout_s=JOIN_TIMEOUT_S,
                                    world_idle_timeout_s=IDLE_TIMEOUT_S)
    async with (running_process(impatient, nursery, Roles(zones=("z1",))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        use_api_loop(running)
        me = await new_player(http)
        opened = trio.current_time()  # the server's clock too: it runs in this process
        async with connect(ws_url(running.url, me["token"])) as lurker:
            assert await close_code(lurker) == 4008
        assert trio.current_time() - opened >= JOIN_TIMEOUT_S
        async with connect(ws_url(running.url, me["token"])) as idler:
            asked = trio.current_time()  # the idle time counts from the join, after this
            await joined(idler, me["character"]["id"])
            assert await close_code(idler) == 4008
        assert trio.current_time() - asked >= IDLE_TIMEOUT_S


async def test_player_moved_is_published(world: Running, http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    character_id = me["character"]["id"]
    with trio.fail_after(10):
        await world.services.bus.connected_once.wait()
    async with (world.services.bus.subscription("player.moved") as moves,
                connect(ws_url(world.url, me["token"])) as conn):
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
        # socket buffers within a few ticks.
        await crowd(running, 2000)
        stuck, reader = await new_player(http, "Stuck"), await new_player(http, "Reader")
        stream, _ = await raw_upgrade(running.url, stuck["token"], rcvbuf=4096)
        async with stream, connect(ws_url(running.url, reader["token"]),
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


async def test_world_zones_lists_the_zone(world: Running, http: httpx.AsyncClient) -> None:
    me = await new_player(http)
    async with connect(ws_url(world.url, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
        # A join may be answered before the zone's first tick has ended (a zone just
        # started, or started again): its tick times are null until then
        # (docs/protocol.md). A snapshot comes from a tick; the tick of a second one began
        # after the first one's had ended.
        await next_of(conn, "snapshot")
        second = await next_of(conn, "snapshot")
        listed = (await http.get("/v1/world/zones")).json()["zones"]
    [zone] = listed
    assert (zone["zone"], zone["up"], zone["players"], zone["tick_rate"]) == ("z1", True, 1, 20.0)
    assert zone["tick"] >= second["tick"]
    tick_ms = zone["tick_ms"]
    assert set(tick_ms) == {"p50", "p99", "max"}
    assert 0 <= tick_ms["p50"] <= tick_ms["p99"] <= tick_ms["max"], tick_ms


async def test_world_map_says_what_a_client_draws(
    settings: Settings, nursery: trio.Nursery
) -> None:
    """GET /v1/world/map (docs/protocol.md): the bounds, the view radius and WORLD_MAP's
    walls and spawn points, as the page draws them."""
    arena = Path(__file__).parent / "arena.json"
    mapped = dataclasses.replace(settings, world_map=str(arena), world_view_radius=250.0,
                                 world_bounds=(-500.0, -400.0, 500.0, 400.0))
    async with (running_process(mapped, nursery, Roles(zones=("z1",))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        found = (await http.get("/v1/world/map")).json()
    file = orjson.loads(arena.read_bytes())
    assert found == {"bounds": [-500.0, -400.0, 500.0, 400.0], "view_radius": 250.0,
                     "walls": file["walls"], "spawns": file["spawns"]}


async def test_world_map_without_a_map_file(http: httpx.AsyncClient) -> None:
    found = (await http.get("/v1/world/map")).json()
    assert found == {"bounds": [-1000.0, -1000.0, 1000.0, 1000.0], "view_radius": 0.0,
                     "walls": [], "spawns": [[0.0, 0.0]]}


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
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            players = [await new_player(http, f"Term{i}") for i in range(3)]
        async with AsyncExitStack() as sockets:
            conns = [await sockets.enter_async_context(connect(ws_url(api.url, p["token"])))
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
