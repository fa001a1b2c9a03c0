"""Hostile clients (issue 19; docs/protocol.md, "Outpost, messages" and "Outpost, caps"):
whatever one socket sends, only that socket pays for it. Each attack is one that was
seen to hurt everyone before: a message nested a few hundred levels deep (it ended the
process), empty continuation frames (quadratic, unlimited, not counted), pings at
loopback speed, hundreds of sockets of one account or one address, receive buffers
allocated for sockets that never join; and a fault of the server's own met while
serving one session or one connection (1011, that one alone).

Rules: a real `outpost dev` process on the session's services (its own zone id, so no
lease is shared with other tests), reached over loopback by the hand-made client of
bench/rawws.py; after each attack a bystander is still served and the process is still
running. Waits are bounded; nothing is timed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
import trio
from trio_websocket import ConnectionClosed

from bench import v2
from bench.rawws import client_frame, close_of, received_until
from server.config import Settings
from server.process import Roles, Running
from server.ws import codec
from server.ws.session import Session
from tests.helpers import eventually, metric, running_process
from tests.processes import Outpost, process_env, started
from tests.world import (
    connect,
    error_for,
    joined,
    leftover,
    new_player,
    raw_upgrade,
    still_open,
    ws_url,
)

# Every test on the C wire module and on its pure-Python twin (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("wire_impl")


@asynccontextmanager
async def hostile_world(settings: Settings, tmp_path: Path,
                        **env: str) -> AsyncIterator[tuple[Outpost, httpx.AsyncClient]]:
    """`outpost dev` on the session's services with a zone of its own, and a client."""
    zone = f"z{uuid.uuid4().hex[:8]}"
    environment = process_env(settings, WORLD_ZONE_ID=zone, OUTPOST_DATA_DIR=str(tmp_path),
                              **env)
    async with started(tmp_path, "dev", env=environment) as world, \
            httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        async def zone_up() -> bool:
            zones = (await http.get("/v1/world/zones")).json()["zones"]
            return any(z["zone"] == zone and z["up"] for z in zones)

        await eventually(zone_up, f"zone {zone} to run")
        yield world, http


async def bystander_served(world: Outpost, http: httpx.AsyncClient,
                           player: dict[str, Any]) -> None:
    """The process still runs, answers HTTP, and a joined player's socket answers."""
    assert world.process.returncode is None, "the process ended"
    assert (await http.get("/healthz")).status_code == 200
    async with connect(ws_url(world.url, player["token"])) as conn:
        await joined(conn, player["character"]["id"])
        await still_open(conn)


async def upgraded(world: Outpost, token: str, *, wire: str = "v1"
                   ) -> tuple[trio.SocketStream, bytes]:
    stream, head = await raw_upgrade(world.url, token,
                                     protocol=v2.SUBPROTOCOL if wire == "v2" else None)
    if not head.startswith(b"HTTP/1.1 101"):
        await stream.aclose()
        pytest.fail(f"the upgrade was refused: {head!r}")
    return stream, leftover(head)


@pytest.mark.parametrize(("wire", "body"), [
    # orjson writes at most 255 levels: the pong of this once raised out of the session.
    ("v1", b'{"type":"ping","t":' + b"[" * 300 + b"]" * 300 + b"}"),
    # msgspec's generic decoder recursed, and raised RecursionError past ~1,000.
    ("v2", b"\x82\xa4type\xa4ping\xa1t" + b"\x91" * 1500 + b"\x90"),
])
async def test_a_deeply_nested_message_is_refused_and_the_process_stays_up(
    settings: Settings, tmp_path: Path, wire: str, body: bytes
) -> None:
    async with hostile_world(settings, tmp_path) as (world, http):
        attacker, bystander = await new_player(http), await new_player(http)
        stream, _ = await upgraded(world, attacker["token"], wire=wire)
        async with stream:
            await stream.send_all(client_frame(body, codec.TEXT if wire == "v1"
                                               else codec.BINARY))
            answer = await received_until(stream, b"validation_failed")
            assert b"flat object" in answer, answer
            ping = v2.encode({"type": "ping", "t": "ok"}) if wire == "v2" \
                else b'{"type":"ping","t":"ok"}'
            await stream.send_all(client_frame(ping, codec.TEXT if wire == "v1"
                                               else codec.BINARY))
            await received_until(stream, b"pong")  # the socket stays open, too
        await bystander_served(world, http, bystander)


async def test_empty_continuation_frames_are_cut_off_at_the_fragment_limit(
    settings: Settings, tmp_path: Path
) -> None:
    """~600 KB of empty continuations once cost time quadratic in their number, and were
    neither limited nor counted: they stalled every other request for seconds."""
    async with hostile_world(settings, tmp_path) as (world, http):
        attacker, bystander = await new_player(http), await new_player(http)
        stream, buffered = await upgraded(world, attacker["token"])
        async with stream:
            empty = client_frame(b"", codec.CONTINUATION, fin=False)
            flood = client_frame(b'{"type":', fin=False) + empty * 100_000
            with trio.move_on_after(5):  # the server stops reading after its close
                await stream.send_all(flood)
            assert await close_of(stream, buffered) == (4008, "too many fragments")
        await bystander_served(world, http, bystander)


async def test_a_ping_flood_is_cut_off_at_the_frame_rate(
    settings: Settings, tmp_path: Path
) -> None:
    async with hostile_world(settings, tmp_path, WORLD_MAX_FRAMES_PER_S="50") as (world, http):
        attacker, bystander = await new_player(http), await new_player(http)
        stream, buffered = await upgraded(world, attacker["token"])
        async with stream:
            with trio.move_on_after(5):
                await stream.send_all(client_frame(b"hi", codec.PING) * 1000)
            assert await close_of(stream, buffered) == (4008, "too many frames")
        await bystander_served(world, http, bystander)


async def refused_upgrade(world: Outpost, token: str) -> dict[str, Any]:
    """An upgrade refused with 429 (docs/protocol.md): its error object."""
    stream, head = await raw_upgrade(world.url, token)
    async with stream:
        if b"}}" not in head:
            head += await received_until(stream, b"}}")
    status, _, rest = head.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 429"), head
    assert b"\r\nRetry-After: " in rest, head
    error: dict[str, Any] = orjson.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "rate_limited", error
    return error


async def test_the_sockets_of_one_account_are_capped(settings: Settings, tmp_path: Path) -> None:
    async with hostile_world(settings, tmp_path, WORLD_MAX_SOCKETS_PER_USER="3") as (world,
                                                                                   http):
        me, bystander = await new_player(http), await new_player(http)
        async with AsyncExitStack() as streams:
            for _ in range(3):
                await streams.enter_async_context((await upgraded(world, me["token"]))[0])
            error = await refused_upgrade(world, me["token"])
            assert "at most 3" in error["message"], error
            assert await metric(f"{world.url}/metrics", "outpost_connections_refused_total",
                                cap="sockets_per_user") == 1
            await bystander_served(world, http, bystander)  # another account is not capped

        async def room() -> bool:  # they closed: room again
            stream, head = await raw_upgrade(world.url, me["token"])
            async with stream:
                return head.startswith(b"HTTP/1.1 101")

        await eventually(room, "a socket once the others closed")


async def test_the_connections_of_one_address_are_capped(
    settings: Settings, tmp_path: Path
) -> None:
    async with hostile_world(settings, tmp_path, MAX_CONNECTIONS_PER_ADDRESS="4") as (world,
                                                                                    http):
        host, port = world.url.removeprefix("http://").split(":")
        async with AsyncExitStack() as held:
            for _ in range(4):
                await held.enter_async_context(await trio.open_tcp_stream(host, int(port)))
            async with await trio.open_tcp_stream(host, int(port)) as refused:
                answer = await received_until(refused, b"}}")
            assert answer.startswith(b"HTTP/1.1 429"), answer
            assert b"at most 4" in answer and b"Retry-After: " in answer, answer

        async def served() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await eventually(served, "a request once the idle connections closed")


async def test_sockets_that_never_join_allocate_no_receive_buffer(
    settings: Settings, tmp_path: Path
) -> None:
    """Each session once allocated a 64 KiB receive buffer as it opened: a few hundred
    sockets that never join cost tens of MB. One buffer serves every socket now."""
    sockets = 300
    async with hostile_world(settings, tmp_path, WORLD_MAX_SOCKETS_PER_USER="1000",
                             MAX_CONNECTIONS_PER_ADDRESS="1000") as (world, http):
        me = await new_player(http)
        api = psutil.Process(world.process.pid)
        async with AsyncExitStack() as opened:
            for _ in range(10):
                await opened.enter_async_context((await upgraded(world, me["token"]))[0])
            before = api.memory_info().rss  # after the first sessions: code paths warmed up
            for _ in range(sockets):
                await opened.enter_async_context((await upgraded(world, me["token"]))[0])
            grown = api.memory_info().rss - before
    per_socket = grown / sockets
    print(f"{sockets} sockets that never join: {grown / 2**20:.1f} MB, "
          f"{per_socket / 1024:.1f} KiB each")
    assert per_socket < 48 * 1024, f"{per_socket / 1024:.1f} KiB a socket"  # was 85 KiB


# --- faults of the server's own, met while serving one socket or one connection ----------

@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    async with running_process(settings, nursery, Roles(zones=("z1",))) as running:
        yield running


async def test_a_fault_serving_one_session_closes_it_alone_with_1011(
    world: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug met while handling one message (put there on purpose: no input is known to
    raise any more) ends that session with 1011, logged once with its id."""
    handle = Session._handle

    def failing(session: Session, received: object) -> None:
        if received is not None and getattr(received, "t", None) == "boom":
            raise RuntimeError("a bug met while handling a ping")
        handle(session, received)  # type: ignore[arg-type]

    monkeypatch.setattr(Session, "_handle", failing)
    async with httpx.AsyncClient(base_url=world.url) as http:
        victim, bystander = await new_player(http), await new_player(http)
        async with connect(ws_url(world.url, bystander["token"])) as other, \
                connect(ws_url(world.url, victim["token"])) as conn:
            await joined(other, bystander["character"]["id"])
            await joined(conn, victim["character"]["id"])
            await conn.send_message('{"type":"ping","t":"boom"}')
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await conn.get_message()
            reason = closed.value.reason
            assert reason is not None and reason.code == 1011, reason
            await still_open(other)
            assert (await error_for(other, {"type": "dance"}))["code"] == "validation_failed"
    faults = [r for r in caplog.records if "failed; closing it with 1011" in r.getMessage()]
    assert len(faults) == 1 and faults[0].exc_info is not None, faults
    assert await metric(f"{world.url}/metrics", "outpost_ws_faults_total") == 1
    assert await metric(f"{world.url}/metrics", "outpost_ws_closes_total", code="1011") == 1


async def test_a_fault_serving_one_connection_ends_it_alone(
    world: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = codec.parse_request_head

    def failing(head: bytes) -> codec.Request | None:
        if b"X-Break: yes" in head:
            raise RuntimeError("a bug met while reading a request head")
        return parse(head)

    monkeypatch.setattr(codec, "parse_request_head", failing)
    host, port = world.url.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as broken:
        await broken.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Break: yes\r\n\r\n")
        with trio.fail_after(5):
            assert await broken.receive_some(1024) == b"", "closed without an answer"
    async with httpx.AsyncClient(base_url=world.url) as http:
        assert (await http.get("/healthz")).status_code == 200
    assert await metric(f"{world.url}/metrics", "outpost_ws_faults_total") == 1
