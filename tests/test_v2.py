"""Protocol v2 over real WebSockets (docs/protocol.md, "World, protocol v2").

Covers: the subprotocol is negotiated (and only `outpost.v2` gets it); every message
both ways is MessagePack in binary frames; the welcome's eid; a v2 client decoding
every frame keeps a view equal to the v1 snapshot of the same tick, through moves,
joins and leaves; a client made to read slowly gets a complete snapshot after
skipping, never a delta against a tick it missed; eids are not reused before their
leave; bad input (malformed MessagePack, wrong types, a text frame, an oversized
frame, a flood) gets v1's errors and close codes, and the others' snapshots go on.

Rules: an in-process api with its zone, real services, trio-websocket as the client
(the hand-made one of bench/rawws.py where a client must misbehave or read slowly),
bench/v2.py as the decoder. Waits are bounded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection

from bench import v2
from bench.rawws import client_frame, close_of, frame_at
from server.config import Settings
from server.process import Roles, Running
from server.ws import codec
from tests.helpers import eventually, metric, running_process, use_api_loop
from tests.world import (
    connect,
    crowd,
    follow,
    joined,
    joined2,
    keep_moving,
    new_player,
    next2,
    next_of,
    raw_upgrade,
    record_v1,
    same_views,
    send,
    send2,
    ws_url,
)

# Every test on the C wire module and on its pure-Python twin (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("wire_impl")


@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    async with running_process(settings, nursery, Roles(zones=("z1",))) as running:
        use_api_loop(running)
        yield running


async def players(world: Running, n: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        return [await new_player(http, f"Vee{i}") for i in range(n)]


async def test_v2_is_negotiated_and_every_message_is_msgpack(world: Running) -> None:
    (me,) = await players(world, 1)
    async with connect(ws_url(world.url, me["token"]), subprotocols=["chat", v2.SUBPROTOCOL]
                       ) as conn:
        assert conn.subprotocol == v2.SUBPROTOCOL
        welcome = await joined2(conn, me["character"]["id"])
        assert welcome["zone"] == "z1" and welcome["tick_rate"] == 20.0
        assert welcome["character"]["id"] == me["character"]["id"]
        eid = welcome["eid"]
        assert isinstance(eid, int) and eid >= 0
        assert welcome["fields"] == ["hp"]  # the shooter's, after [eid, x, y, seq]
        first = await next2(conn, "snapshot")
        assert first["base"] is None, "the first snapshot is complete"
        assert [eid, me["character"]["id"], "Vee0"] in first["enter"]
        await send2(conn, {"type": "move", "dx": 1.5, "dy": -0.5, "seq": 1})
        while True:
            snapshot = await next2(conn, "snapshot")
            mine = [u for u in snapshot["update"] if u[0] == eid]
            if mine and mine[0][3] == 1:
                break
        assert mine == [[eid, 1.5, -0.5, 1, 100]]  # and its full hit points
        await send2(conn, {"type": "ping", "t": "v2"})
        assert (await next2(conn, "pong"))["t"] == "v2"


async def test_a_client_that_offers_no_v2_gets_v1(world: Running) -> None:
    (me,) = await players(world, 1)
    async with connect(ws_url(world.url, me["token"]), subprotocols=["chat"]) as conn:
        assert conn.subprotocol is None
        welcome = await joined(conn, me["character"]["id"])
        assert "eid" not in welcome


async def churn(world: Running, movers: list[dict[str, Any]], rounds: int) -> None:
    """Players that move, leave and come back, so that eids are freed and reused."""
    for round_ in range(rounds):
        for i, player in enumerate(movers):
            async with connect(ws_url(world.url, player["token"])) as conn:
                await joined(conn, player["character"]["id"])
                await send(conn, {"type": "move", "dx": 1.0 + i, "dy": -0.5, "seq": 1})
                await next_of(conn, "snapshot")
                if round_ % 2:
                    await trio.sleep(0.1)


async def test_a_v2_view_equals_the_v1_snapshot_of_the_same_tick(world: Running) -> None:
    watcher1, watcher2, *movers = await players(world, 6)
    ticks1: dict[int, Any] = {}
    ticks2: dict[int, Any] = {}
    async with (connect(ws_url(world.url, watcher1["token"])) as one,
                connect(ws_url(world.url, watcher2["token"]),
                        subprotocols=[v2.SUBPROTOCOL]) as two):
        await joined(one, watcher1["character"]["id"])
        await joined2(two, watcher2["character"]["id"])
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(record_v1, one, ticks1, 10 ** 6)
                nursery.start_soon(follow, two, v2.PlayerView(), ticks2, 10 ** 6)
                await churn(world, movers, rounds=3)
                watchers = {watcher1["character"]["id"], watcher2["character"]["id"]}

                async def churned() -> bool:  # the last leave in both, and ticks to compare
                    return (all(views and set(views[max(views)]) == watchers
                                for views in (ticks1, ticks2))
                            and len(ticks1.keys() & ticks2.keys()) > 20)

                await eventually(churned, "the movers to leave both views")
                nursery.cancel_scope.cancel()
    assert same_views(ticks1, ticks2) > 20
    changes = sum(ticks1[t] != ticks1.get(t - 1) for t in ticks1)
    assert changes > 10, "players came, moved and went while the two watched"


async def test_resync_asks_for_a_complete_snapshot_next(world: Running) -> None:
    """docs/protocol.md, "resync": a client that cannot apply a delta recovers by itself."""
    (me,) = await players(world, 1)
    async with connect(ws_url(world.url, me["token"]), subprotocols=[v2.SUBPROTOCOL]) as conn:
        await joined2(conn, me["character"]["id"])
        while (await next2(conn, "snapshot"))["base"] is None:
            pass  # the first ones are complete
        bases = [(await next2(conn, "snapshot"))["base"] for _ in range(20)]
        assert None not in bases, "a quiet zone sends deltas, tick after tick"
        await send2(conn, {"type": "resync"})
        bases = [(await next2(conn, "snapshot"))["base"] for _ in range(5)]
        assert None in bases, bases  # one may have been on its way before the resync
        assert bases[-1] is not None, "and deltas again after it"


async def test_a_slow_reader_gets_a_complete_snapshot_after_skipping(
    settings: Settings, nursery: trio.Nursery
) -> None:
    patient = dataclasses.replace(settings, world_slow_close_s=30.0)
    async with running_process(patient, nursery, Roles(zones=("z1",))) as world:
        use_api_loop(world)
        # 4000 others that move every tick: ~70 KB deltas, more than the kernel holds
        # for a client that reads nothing for a few ticks.
        async with trio.open_nursery() as moving:
            moving.start_soon(keep_moving, world, await crowd(world, 4000))
            received, players_seen = await read_slowly(world)
            moving.cancel_scope.cancel()
    gaps = [(i, tick) for i, ((tick, _), (before, _)) in
            enumerate(zip(received[1:], received, strict=False), 1) if tick != before + 1]
    assert gaps, f"the reader skipped nothing: {received}"
    for i, _ in gaps:
        assert received[i][1] is None, "after a gap comes a complete snapshot"
    assert any(base is not None for _, base in received), "deltas when it kept up"
    assert players_seen == 4001


def gap_at(received: list[tuple[int, int | None]]) -> int:
    """Where the first skipped tick shows (a large number before one does)."""
    return next((i for i in range(1, len(received))
                 if received[i][0] != received[i - 1][0] + 1), 10 ** 6)


async def read_slowly(world: Running) -> tuple[list[tuple[int, int | None]], int]:
    """A v2 client that joins, reads nothing until the server has skipped a snapshot for
    it, then decodes snapshots into a view (which refuses a delta against a tick it does
    not hold) until 20 after the first gap (at most 200); (tick, base) of each, and how
    many players the view holds at the end."""
    (me,) = await players(world, 1)

    async def skipped() -> float:  # its outlet is the zone's only real one
        return await metric(world.metrics_url, "outpost_zone_snapshots_total", zone="z1",
                            result="skipped")

    skipped_before = await skipped()
    stream, head = await raw_upgrade(world.url, me["token"], rcvbuf=4096,
                                     protocol=v2.SUBPROTOCOL)
    async with stream:
        assert b"sec-websocket-protocol: outpost.v2" in head.lower()
        await stream.send_all(client_frame(v2.encode(
            {"type": "join", "character_id": me["character"]["id"]}), codec.BINARY))
        data = bytearray(head.partition(b"\r\n\r\n")[2])

        async def skipping() -> bool:
            return await skipped() > skipped_before

        await eventually(skipping, "a snapshot skipped for the reader that reads nothing")
        view, received = v2.PlayerView(), list[tuple[int, int | None]]()
        with trio.fail_after(10):
            while len(received) < min(200, gap_at(received) + 20):
                data += await stream.receive_some(1 << 20)
                offset = 0
                while (frame := frame_at(data, offset)) is not None:
                    opcode, start, end = frame
                    assert opcode == codec.BINARY
                    message = v2.decode(data[start:end])
                    if message["type"] == "snapshot":
                        view.apply(message)  # OutOfStep if a delta followed a gap
                        received.append((message["tick"], message["base"]))
                    offset = end
                del data[:offset]
    return received, len(view.players)


@pytest.mark.parametrize(("payload", "code"), [
    (b"\xc1", "bad_json"),  # never used in MessagePack
    (b"\x92\x01", "bad_json"),  # an array of two with one element
    (v2.encode([1, 2]), "bad_json"),  # not a map
    (v2.encode({"type": "dance"}), "validation_failed"),
    (v2.encode({"type": 5}), "validation_failed"),
    (v2.encode({"type": "move", "dx": "1", "dy": 0, "seq": 5}), "validation_failed"),
    (v2.encode({"type": "move", "dx": float("nan"), "dy": 0, "seq": 5}), "validation_failed"),
    (v2.encode({"type": "move", "dx": 1, "dy": 0, "seq": 1.5}), "validation_failed"),
    (v2.encode({"type": "move", "dx": 1, "dy": 0, "seq": -1}), "validation_failed"),
    (v2.encode({"type": "join", "character_id": b"not text"}), "validation_failed"),
    (v2.encode({"type": "travel", "zone": 7}), "validation_failed"),
])
async def test_bad_messages_get_v1s_errors_and_the_socket_stays_open(
    world: Running, payload: bytes, code: str
) -> None:
    (me,) = await players(world, 1)
    async with connect(ws_url(world.url, me["token"]), subprotocols=[v2.SUBPROTOCOL]) as conn:
        await joined2(conn, me["character"]["id"])
        await conn.send_message(payload)
        error = await next2(conn, "error")
        assert error["code"] == code and error["message"], error
        await send2(conn, {"type": "ping", "t": 1})
        assert (await next2(conn, "pong"))["t"] == 1


async def test_a_text_frame_from_a_v2_client_is_refused(world: Running) -> None:
    (me,) = await players(world, 1)
    async with connect(ws_url(world.url, me["token"]), subprotocols=[v2.SUBPROTOCOL]) as conn:
        await conn.send_message('{"type": "ping"}')
        error = await next2(conn, "error")
        assert (error["code"], error["message"]) == (
            "validation_failed", "send binary frames of MessagePack")


async def bystander_ticks(conn: WebSocketConnection, ticks: list[int]) -> None:
    while True:
        ticks.append((await next_of(conn, "snapshot"))["tick"])


@pytest.mark.parametrize("abuse", ["oversized", "flood"])
async def test_an_abusive_v2_client_is_closed_and_nobody_else_notices(
    world: Running, settings: Settings, abuse: str
) -> None:
    offender, bystander = await players(world, 2)
    ticks: list[int] = []
    async with connect(ws_url(world.url, bystander["token"])) as other:
        await joined(other, bystander["character"]["id"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bystander_ticks, other, ticks)
            stream, head = await raw_upgrade(world.url, offender["token"],
                                             protocol=v2.SUBPROTOCOL)
            async with stream:
                if abuse == "oversized":
                    big = v2.encode({"type": "ping", "t": "x" * settings.world_max_message_bytes})
                    await stream.send_all(client_frame(big, codec.BINARY))
                    expected = (4008, "frame too large")
                else:
                    ping = client_frame(v2.encode({"type": "ping", "t": 1}), codec.BINARY)
                    await stream.send_all(ping * int(3 * settings.world_max_messages_per_s))
                    expected = (4008, "too many messages")
                assert await close_of(stream, head.partition(b"\r\n\r\n")[2]) == expected
            at_close = len(ticks)

            async def twenty_more() -> bool:
                return len(ticks) >= at_close + 20

            await eventually(twenty_more, "twenty ticks more of the bystander's")
            nursery.cancel_scope.cancel()
    assert len(ticks) > 10
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "the bystander missed none"


async def test_the_upgrade_names_the_subprotocol_only_for_v2(world: Running) -> None:
    token = (await players(world, 1))[0]["token"]
    for offered, named in [(v2.SUBPROTOCOL, True), ("outpost.v3, chat", False), (None, False)]:
        stream, head = await raw_upgrade(world.url, token, protocol=offered)
        async with stream:
            assert head.startswith(b"HTTP/1.1 101"), head
            assert (b"sec-websocket-protocol: outpost.v2" in head.lower()) == named, head
