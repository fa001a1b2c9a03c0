"""Interest management over real WebSockets (docs/protocol.md, "Interest management").

With WORLD_VIEW_RADIUS = 50: a player within the radius is listed, one farther than
twice it is not; walking out of range removes a player and walking back adds it;
travel and disconnect remove it; all of it for v1 and v2 clients alike, who see the
same players at the same positions.

Rules: an in-process api running zones z1 and z2, real services; characters are
placed by writing their rows before they join (as a saved position would be).
Waits are bounded.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection

from bench import v2
from characters.store import move_to_zone
from server.config import Settings
from server.process import Roles, Running
from tests.helpers import running_process, use_api_loop
from tests.world import connect, joined, joined2, new_player, next_of, send, ws_url

RADIUS = 50.0


@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    near = dataclasses.replace(settings, world_view_radius=RADIUS)
    async with running_process(near, nursery, Roles(zones=("z1", "z2"))) as running:
        use_api_loop(running)
        yield running


async def placed(world: Running, name: str, x: float, y: float) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        player = await new_player(http, name)
    await world.services.pg.transact(move_to_zone, uuid.UUID(player["character"]["id"]),
                                     "z1", x, y)
    return player


async def listed_v1(conn: WebSocketConnection) -> dict[str, tuple[float, float]]:
    snapshot = await next_of(conn, "snapshot")
    return {p["name"]: (p["x"], p["y"]) for p in snapshot["players"]}


async def eventually_listed(conn: WebSocketConnection,
                            wanted: Any) -> dict[str, tuple[float, float]]:
    """The first v1 snapshot whose {name: position} satisfies `wanted`."""
    with trio.fail_after(10):
        while not wanted(seen := await listed_v1(conn)):
            pass
    return seen


async def test_within_the_radius_is_listed_and_past_twice_it_is_not(world: Running) -> None:
    me = await placed(world, "Me", 0.0, 0.0)
    near = await placed(world, "Near", 30.0, 40.0)  # 50 away: on the radius
    far = await placed(world, "Far", 0.0, 2 * RADIUS + 150.0)
    async with (connect(ws_url(world.url, me["token"])) as mine,
                connect(ws_url(world.url, near["token"])) as nearby,
                connect(ws_url(world.url, far["token"])) as faraway):
        await joined(nearby, near["character"]["id"])
        await joined(faraway, far["character"]["id"])
        await joined(mine, me["character"]["id"])
        seen = await eventually_listed(mine, lambda s: "Near" in s)
        assert seen == {"Me": (0.0, 0.0), "Near": (30.0, 40.0)}
        assert set(await listed_v1(faraway)) == {"Far"}


async def test_walking_out_of_range_and_back(world: Running) -> None:
    me = await placed(world, "Me", 0.0, 0.0)
    walker = await placed(world, "Walker", 40.0, 0.0)
    async with (connect(ws_url(world.url, me["token"])) as mine,
                connect(ws_url(world.url, walker["token"])) as walking):
        await joined(walking, walker["character"]["id"])
        await joined(mine, me["character"]["id"])
        await eventually_listed(mine, lambda s: "Walker" in s)
        seq = 0
        for target, present in [(4 * RADIUS, False), (10.0, True)]:
            with trio.fail_after(20):
                while abs((x := await position_of(walking, walker["character"]["id"]))
                          - target) > 5:
                    seq += 1
                    step = 5.0 if target > x else -5.0
                    await send(walking, {"type": "move", "dx": step, "dy": 0.0, "seq": seq})
            seen = await eventually_listed(mine, lambda s, p=present: ("Walker" in s) == p)
            assert ("Walker" in seen) == present


async def position_of(conn: WebSocketConnection, character_id: str) -> float:
    snapshot = await next_of(conn, "snapshot")
    [me] = [p for p in snapshot["players"] if p["id"] == character_id]
    return float(me["x"])


async def test_travel_and_disconnect_remove_a_player_from_view(world: Running) -> None:
    me = await placed(world, "Me", 0.0, 0.0)
    traveller = await placed(world, "Traveller", 10.0, 10.0)
    leaver = await placed(world, "Leaver", -10.0, 5.0)
    async with (connect(ws_url(world.url, me["token"])) as mine,
                connect(ws_url(world.url, traveller["token"])) as travelling):
        await joined(mine, me["character"]["id"])
        await joined(travelling, traveller["character"]["id"])
        async with connect(ws_url(world.url, leaver["token"])) as leaving:
            await joined(leaving, leaver["character"]["id"])
            await eventually_listed(mine, lambda s: {"Traveller", "Leaver"} <= set(s))
        seen = await eventually_listed(mine, lambda s: "Leaver" not in s)
        assert "Traveller" in seen
        await send(travelling, {"type": "travel", "zone": "z2"})
        assert (await next_of(travelling, "welcome"))["zone"] == "z2"
        assert await eventually_listed(mine, lambda s: "Traveller" not in s) == {
            "Me": (0.0, 0.0)}


async def test_v1_and_v2_clients_see_the_same_players_at_the_same_positions(
    world: Running
) -> None:
    one = await placed(world, "One", 0.0, 0.0)
    two = await placed(world, "Two", 20.0, 0.0)
    near = [await placed(world, f"Near{i}", 10.0 * i, 30.0) for i in range(3)]
    await placed(world, "Gone", 900.0, 900.0)
    async with (connect(ws_url(world.url, one["token"])) as first,
                connect(ws_url(world.url, two["token"]), subprotocols=[v2.SUBPROTOCOL])
                as second):
        await joined(first, one["character"]["id"])
        await joined2(second, two["character"]["id"])
        for player in near:
            async with connect(ws_url(world.url, player["token"])) as conn:
                await joined(conn, player["character"]["id"])
                await send(conn, {"type": "move", "dx": 1.0, "dy": 1.0, "seq": 1})
                await next_of(conn, "snapshot")
        # What is recorded next comes after their leaves (v2's messages wait in order).
        await eventually_listed(first, lambda seen: not any(n.startswith("Near") for n in seen))
        seen1: dict[int, dict[str, tuple[float, float]]] = {}
        seen2: dict[int, dict[str, tuple[float, float]]] = {}
        view = v2.PlayerView()
        with trio.fail_after(10):
            while len(seen2) < 10 or not seen1.keys() & seen2.keys():
                raw = await second.get_message()
                assert isinstance(raw, bytes)
                message = v2.decode(raw)
                if message["type"] == "snapshot":
                    view.apply(message)
                    seen2[message["tick"]] = {p.name: (p.x, p.y)
                                              for p in view.players.values()}
                while (snapshot := await next_of(first, "snapshot"))["tick"] < \
                        message["tick"]:
                    pass
                seen1[snapshot["tick"]] = {p["name"]: (p["x"], p["y"])
                                           for p in snapshot["players"]}
    both = seen1.keys() & seen2.keys()
    assert both
    for tick in both:
        assert seen2[tick] == seen1[tick]
    assert seen1[max(both)] == {"One": (0.0, 0.0), "Two": (20.0, 0.0)}, "the others left"
