"""Zones in processes of their own (docs/protocol.md, "Zones across processes").

Covers: an api process, two zone processes and a provisioner as real subprocesses;
a client joined through the api sees its zone's snapshots; travel to the other zone
and back, and to an unknown zone; clients in different zones do not see each other;
kill -9 of a zone process (its clients hear zone_unavailable and are re-joined at
their checkpointed positions when it restarts, while the other zone never stalls);
a standby process for a zone takes over within the lease; two api processes serving
clients of one zone.

Rules: every process is `python -m server.cli ...` against the session's services,
addressed only through HTTP, WebSockets and the zone directory, as an operator
would. Waits are bounded polls or `trio.fail_after`.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from bench import v2
from server.config import Settings
from tests.helpers import bearer, eventually
from tests.processes import Outpost, process_env, started
from tests.world import (
    connect,
    follow,
    joined,
    joined2,
    new_player,
    next_of,
    record_v1,
    same_views,
    send,
    snapshot_with,
    stored_characters,
    ws_url,
)

ZONES = ("z1", "z2")


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return process_env(settings, WORLD_ZONES=",".join(ZONES), WORLD_CHECKPOINT="1")


@pytest.fixture
async def cluster(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[dict[str, Outpost]]:
    """api, zone z1, zone z2 and a provisioner, each its own process."""
    async with AsyncExitStack() as stack:
        processes = {
            name: await stack.enter_async_context(started(tmp_path, *args, env=env))
            for name, args in [("api", ("api",)), ("z1", ("zone", "z1")),
                               ("z2", ("zone", "z2")), ("provisioner", ("provisioner",))]}
        await zones_up(processes["api"].url, *ZONES)
        yield processes


async def zone_list(url: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get("/v1/world/zones")
    assert response.status_code == 200, response.text
    return {z["zone"]: z for z in response.json()["zones"]}


async def zones_up(url: str, *zone_ids: str) -> None:
    async def up() -> bool:
        listed = await zone_list(url)
        return all(listed.get(z, {}).get("up") for z in zone_ids)

    await eventually(up, f"zones {zone_ids} up", tries=200)


async def players(api: Outpost, n: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        return [await new_player(http, f"Shard{i}") for i in range(n)]


async def test_zones_through_the_api_travel_and_isolation(cluster: dict[str, Outpost]) -> None:
    api = cluster["api"]
    ada, bob = await players(api, 2)
    a_id, b_id = ada["character"]["id"], bob["character"]["id"]
    async with (connect(ws_url(api.url, ada["token"])) as a,
                connect(ws_url(api.url, bob["token"])) as b):
        assert (await joined(a, a_id))["zone"] == "z1"
        await joined(b, b_id)
        await send(a, {"type": "move", "dx": 1.0, "dy": 0.0, "seq": 1})
        seen = await snapshot_with(b, a_id, lambda e: e["seq"] == 1)
        assert seen["zone"] == "z1"

        await send(b, {"type": "move", "dx": 0.0, "dy": 3.0, "seq": 1})
        await snapshot_with(b, b_id, lambda e: e["seq"] == 1)
        await send(b, {"type": "travel", "zone": "z2"})
        welcome = await next_of(b, "welcome")
        assert (welcome["zone"], welcome["character"]["zone_id"]) == ("z2", "z2")
        assert (welcome["character"]["x"], welcome["character"]["y"]) == (0.0, 0.0)
        for _ in range(5):  # each sees its own zone only
            in_z2 = await next_of(b, "snapshot")
            assert in_z2["zone"] == "z2"
            assert [p["id"] for p in in_z2["players"]] == [b_id]
        await eventually(lambda: _without(a, b_id), "z1's snapshots to drop the traveller")

        error = await _error_for(b, {"type": "travel", "zone": "z9"})
        assert error["code"] == "zone_unavailable"
        await send(b, {"type": "travel", "zone": "z1"})
        assert (await next_of(b, "welcome"))["zone"] == "z1"
        await snapshot_with(a, b_id, lambda e: (e["x"], e["y"]) == (0.0, 0.0))
    listed = await zone_list(api.url)
    assert listed["z1"]["up"] and listed["z2"]["up"]


async def _without(conn: Any, character_id: str) -> bool:
    snapshot = await next_of(conn, "snapshot")
    return all(p["id"] != character_id for p in snapshot["players"])


async def _error_for(conn: Any, message: dict[str, Any]) -> dict[str, Any]:
    await send(conn, message)
    return await next_of(conn, "error")


async def test_a_killed_zone_comes_back_and_the_other_never_stalls(
    cluster: dict[str, Outpost], tmp_path: Path, env: dict[str, str], settings: Settings
) -> None:
    api = cluster["api"]
    ada, cyd = await players(api, 2)
    a_id, c_id = ada["character"]["id"], cyd["character"]["id"]
    async with (connect(ws_url(api.url, ada["token"])) as a,
                connect(ws_url(api.url, cyd["token"])) as c):
        await joined(a, a_id)
        await joined(c, c_id)
        await send(c, {"type": "travel", "zone": "z2"})
        await next_of(c, "welcome")
        await send(a, {"type": "move", "dx": 2.0, "dy": 0.0, "seq": 1})
        await snapshot_with(a, a_id, lambda e: e["seq"] == 1)

        async def checkpointed() -> bool:  # by the zone's checkpoint (1 s)
            [row] = await stored_characters(settings, [a_id])
            return (row.x, row.y) == (2.0, 0.0)

        await eventually(checkpointed, "the move saved by a checkpoint")

        async with trio.open_nursery() as nursery:
            ticks: list[int] = []
            nursery.start_soon(_record_ticks, c, ticks)
            cluster["z1"].process.send_signal(signal.SIGKILL)
            with trio.fail_after(4):
                assert (await next_of(a, "error"))["code"] == "zone_unavailable"
            async with started(tmp_path, "zone", "z1", env=env):
                with trio.fail_after(15):
                    welcome = await next_of(a, "welcome")
                assert (welcome["zone"], welcome["character"]["x"]) == ("z1", 2.0)
                await send(a, {"type": "move", "dx": 1.0, "dy": 0.0, "seq": 2})
                await snapshot_with(a, a_id, lambda e: e["x"] == 3.0)
                nursery.cancel_scope.cancel()
    assert len(ticks) > 40, "z2 kept ticking for its client throughout"
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "z2 stalled or skipped"


async def _record_ticks(conn: Any, ticks: list[int]) -> None:
    while True:
        ticks.append((await next_of(conn, "snapshot"))["tick"])


async def test_a_standby_takes_over_within_the_lease(
    cluster: dict[str, Outpost], tmp_path: Path, env: dict[str, str], settings: Settings
) -> None:
    api = cluster["api"]
    owner = (await zone_list(api.url))["z2"]["owner"]
    async with started(tmp_path, "zone", "z2", env=env) as standby:
        # Its start line says what it does: not "running".
        assert standby.banner.startswith(f"zone z2: standing by (held by process {owner}); "
                                         "metrics http://"), standby.banner
        assert cluster["z2"].banner.startswith("running zone z2; metrics http://")
        # Said once, though it tries for z2 every third of a lease: here for three leases
        # (a wait for something not to happen, so a sleep).
        await trio.sleep(3 * settings.zone_lease_s)
        said = [line for line in standby.log.read_text().splitlines()
                if '"logger":"zones.host"' in line and "standing by" in line]
        assert len(said) == 1, said
        assert (await zone_list(api.url))["z2"]["owner"] == owner, "only one runs z2"
        killed_at = trio.current_time()
        cluster["z2"].process.send_signal(signal.SIGKILL)

        async def taken_over() -> bool:
            z2 = (await zone_list(api.url))["z2"]
            return z2["up"] and z2["owner"] != owner

        await eventually(taken_over, "the standby to take z2 over", tries=200)
        assert trio.current_time() - killed_at < 2 * settings.zone_lease_s
        assert await standby.stop() == 0


async def test_two_api_processes_serve_one_zone(
    cluster: dict[str, Outpost], tmp_path: Path, env: dict[str, str]
) -> None:
    async with started(tmp_path, "api", env=env) as second:
        one, two = (await players(cluster["api"], 1))[0], (await players(second, 1))[0]
        ids = {one["character"]["id"], two["character"]["id"]}
        async with (connect(ws_url(cluster["api"].url, one["token"])) as x,
                    connect(ws_url(second.url, two["token"])) as y):
            await joined(x, one["character"]["id"])
            await joined(y, two["character"]["id"])
            for conn in (x, y):
                with trio.fail_after(5):
                    while {p["id"] for p in (await next_of(conn, "snapshot"))["players"]} \
                            < ids:
                        pass

            async def counted() -> bool:
                return (await zone_list(cluster["api"].url))["z1"]["players"] == 2

            await eventually(counted, "z1 to count both players")
        assert await second.stop() == 0

        async def gone() -> bool:
            return (await zone_list(cluster["api"].url))["z1"]["players"] == 0

        await eventually(gone, "both players to have left z1")


async def test_a_zone_no_api_was_told_of_is_listed_reachable_and_shown_down_when_stopped(
    cluster: dict[str, Outpost], tmp_path: Path, env: dict[str, str], settings: Settings
) -> None:
    """WORLD_ZONES is optional: api processes learn zones from the zone directory."""
    api = cluster["api"]
    untold = {k: v for k, v in env.items() if k != "WORLD_ZONES"}
    async with started(tmp_path, "api", env=untold) as second:
        await zones_up(second.url, *ZONES)  # what runs is listed, though nobody said so
        (ada,) = await players(second, 1)
        a_id = ada["character"]["id"]
        async with started(tmp_path, "zone", "z9", env=untold) as z9:
            await zones_up(api.url, "z9")
            await zones_up(second.url, "z9")
            async with connect(ws_url(second.url, ada["token"])) as conn:
                assert (await joined(conn, a_id))["zone"] == "z1"
                await send(conn, {"type": "travel", "zone": "z9"})
                welcome = await next_of(conn, "welcome")
                assert (welcome["zone"], welcome["character"]["zone_id"]) == ("z9", "z9")
                await snapshot_with(conn, a_id, lambda e: True)
                await send(conn, {"type": "travel", "zone": "z1"})
                assert (await next_of(conn, "welcome"))["zone"] == "z1"
            assert await z9.stop() == 0  # a graceful stop gives the lease back
        await zone_is_down(second.url, "z9", within_s=1.0)
        async with started(tmp_path, "zone", "z9", env=untold) as z9:
            await zones_up(second.url, "z9")
            z9.process.send_signal(signal.SIGKILL)  # no release: its renewals just stop
            await zone_is_down(second.url, "z9", within_s=settings.zone_lease_s + 1.5)
        listed = await zone_list(second.url)
        assert listed["z9"] == {"zone": "z9", "up": False, "players": 0}


async def zone_is_down(url: str, zone_id: str, *, within_s: float) -> None:
    async def down() -> bool:
        return not (await zone_list(url))[zone_id]["up"]

    await eventually(down, f"{zone_id} to be shown down", tries=int(10 * within_s))


async def test_v1_and_v2_clients_through_an_api_process_see_the_same(
    cluster: dict[str, Outpost]
) -> None:
    """The api's mirror of the zone (fed by the zone's feed) serves both wires."""
    api = cluster["api"]
    one, two, mover = await players(api, 3)
    mover_id = mover["character"]["id"]
    ticks1: dict[int, Any] = {}
    ticks2: dict[int, Any] = {}
    async with (connect(ws_url(api.url, one["token"])) as first,
                connect(ws_url(api.url, two["token"]), subprotocols=[v2.SUBPROTOCOL])
                as second):
        await joined(first, one["character"]["id"])
        await joined2(second, two["character"]["id"])
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(record_v1, first, ticks1, 10 ** 6)
                nursery.start_soon(follow, second, v2.PlayerView(), ticks2, 10 ** 6)
                async with connect(ws_url(api.url, mover["token"])) as moving:
                    await joined(moving, mover["character"]["id"])
                    for seq in range(1, 11):
                        await send(moving, {"type": "move", "dx": 0.7, "dy": -0.3, "seq": seq})
                        await next_of(moving, "snapshot")

                async def left() -> bool:  # the mover's leave, in both views
                    return all(views and mover_id not in views[max(views)]
                               for views in (ticks1, ticks2))

                await eventually(left, "the mover to leave both views")
                nursery.cancel_scope.cancel()
    assert same_views(ticks1, ticks2) > 10
    ids = {one["character"]["id"], two["character"]["id"], mover_id}
    assert any(set(seen) == ids for seen in ticks2.values()), "all three were seen"
    assert set(ticks2[max(ticks2)]) == ids - {mover_id}, "the others stay"


async def test_sigterm_of_a_zone_saves_positions_first(
    cluster: dict[str, Outpost], settings: Settings
) -> None:
    api = cluster["api"]
    (eve,) = await players(api, 1)
    e_id = eve["character"]["id"]
    async with connect(ws_url(api.url, eve["token"])) as conn:
        await joined(conn, e_id)
        await send(conn, {"type": "move", "dx": -1.5, "dy": 0.5, "seq": 1})
        await snapshot_with(conn, e_id, lambda e: e["seq"] == 1)
        assert await cluster["z1"].stop(signal.SIGTERM) == 0
        assert (await next_of(conn, "error"))["code"] == "zone_unavailable"
    [row] = await stored_characters(settings, [e_id])
    assert (row.x, row.y) == (-1.5, 0.5)


async def test_joining_the_same_character_again_through_a_zone_process_is_no_takeover(
    cluster: dict[str, Outpost]
) -> None:
    """A second join of its own character on the same socket (what a rejoin sent again
    while the first was being answered also is) gets a fresh welcome, not a 4009."""
    api = cluster["api"]
    (ada,) = await players(api, 1)
    a_id = ada["character"]["id"]
    async with connect(ws_url(api.url, ada["token"])) as conn:
        first = await joined(conn, a_id)
        await send(conn, {"type": "move", "dx": 1.0, "dy": 0.0, "seq": 1})
        await snapshot_with(conn, a_id, lambda e: e["seq"] == 1)
        again = await joined(conn, a_id)
        assert (first["character"]["x"], again["character"]["x"]) == (0.0, 1.0)
        await send(conn, {"type": "move", "dx": 1.0, "dy": 0.0, "seq": 2})
        await snapshot_with(conn, a_id, lambda e: (e["x"], e["seq"]) == (2.0, 2))


async def test_fire_works_the_same_for_a_zone_in_another_process(
    cluster: dict[str, Outpost]
) -> None:
    """The game's inputs cross to the zone batched (zone.<id>.input), its events and hit
    points come back in the feed, and its refusals in the api's news."""
    api = cluster["api"]
    shooter, target = await players(api, 2)
    s_id, t_id = shooter["character"]["id"], target["character"]["id"]
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        for user in (shooter, target):
            async def armed(user: dict[str, Any] = user) -> bool:  # progression provisioned
                me = (await http.get("/v1/me", headers=bearer(user["token"]))).json()
                return bool(me["progression"])

            await eventually(armed, "the pistol unlocked")
    async with (connect(ws_url(api.url, shooter["token"])) as a,
                connect(ws_url(api.url, target["token"])) as b):
        await joined(a, s_id)
        await joined(b, t_id)
        await send(b, {"type": "move", "dx": 3.0, "dy": 0.0, "seq": 1})
        seen = await snapshot_with(a, t_id, lambda e: e["x"] == 3.0)
        await send(a, {"type": "fire", "weapon": "pistol", "ax": 1.0, "ay": 0.0,
                       "tick": seen["tick"], "seq": 1})
        hit = await next_of(b, "events")
        await snapshot_with(a, t_id, lambda e: e["hp"] == 75)
        refused = await _error_for(a, {"type": "fire", "weapon": "rifle", "ax": 1.0,
                                       "ay": 0.0, "tick": seen["tick"], "seq": 2})
    assert hit["events"] == [{"kind": "hit", "shooter": s_id, "victim": t_id,
                              "weapon": "pistol", "damage": 25, "hp": 75}]
    assert (refused["code"], refused["seq"]) == ("forbidden", 2)
