"""A zone that stops in the process its players are connected to (docs/protocol.md,
"Zones across processes").

An overloaded process can miss a renewal of its zone's lease; another process then
holds the zone, and this one stops its zone actor (saving every position). Players
connected to this process must not be left behind with a dead zone: they hear
`zone_unavailable`, stay connected, and are welcomed again at their saved positions
once the zone runs again, here or elsewhere. And a holder cut off from NATS, which
cannot renew, stops its zone before its key can expire and a standby take over: never
two owners.

Rules: the session's real NATS and Postgres (the cut-off holder has a NATS of its own,
frozen with SIGSTOP); the lease is taken from the process as
another process would take it (a write over the zone's key in the directory), and
the zone's id is the test's own, so no other test's process is in the way.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
import trio
from nats.js import JetStreamContext

from bus import subjects
from bus.directory import BUCKET
from server.config import Settings
from server.devstack import _nats
from server.process import Roles
from tests.helpers import eventually, metric, running_process, use_api_loop
from tests.world import connect, joined, new_player, next_of, send, snapshot_with, ws_url
from zones.errors import ZoneUnavailable
from zones.host import FENCE_AT
from zones.interest import View
from zones.remote import REJOIN_EVERY_S
from zones.world import World, _read_owned


async def _take_over(js: JetStreamContext, zone_id: str) -> None:
    bucket = await js.key_value(BUCKET)
    await bucket.put(zone_id, orjson.dumps({"owner": "another process"}))


async def test_players_of_a_zone_whose_lease_is_lost_are_told_and_welcomed_back(
    settings: Settings, nursery: trio.Nursery
) -> None:
    zone = f"lease-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, world_zone_id=zone)
    async with (running_process(own, nursery, Roles(zones=(zone,))) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        use_api_loop(running)
        stayer, mover = [await new_player(http, name) for name in ("Stayer", "Mover")]
        assert mover["character"]["zone_id"] == zone
        mover_id = mover["character"]["id"]
        async with (connect(ws_url(running.url, stayer["token"])) as watching,
                    connect(ws_url(running.url, mover["token"])) as moving):
            await joined(watching, stayer["character"]["id"])
            await joined(moving, mover_id)
            await send(moving, {"type": "move", "dx": 3, "dy": -2, "seq": 1})
            await snapshot_with(watching, mover_id, lambda p: p["x"] == 3)

            await running.services.bus.on_jetstream(_take_over, zone)
            for conn in (watching, moving):  # at its next renewal, a third of a lease away
                lost = await next_of(conn, "error")
                assert lost["code"] == "zone_unavailable", lost
            assert zone not in running.services.world.zones
            assert await metric(running.metrics_url, "outpost_zone_stops_total",
                                zone=zone, reason="lease_lost") == 1

            # The other process never renews its key, which expires; this process takes
            # its zone back, and its players are welcomed again where they were.
            back_within_s = 3 * running.services.world.directory.lease_s + 5
            welcome = await next_of(moving, "welcome", within_s=back_within_s)
            assert welcome["zone"] == zone
            assert (welcome["character"]["x"], welcome["character"]["y"]) == (3, -2)
            await next_of(watching, "welcome", within_s=back_within_s)
            await send(moving, {"type": "move", "dx": 1, "dy": 0, "seq": 2})
            seen = await snapshot_with(watching, mover_id, lambda p: p["x"] == 4)
            assert {p["id"] for p in seen["players"]} == {stayer["character"]["id"], mover_id}
            again = None
            with trio.move_on_after(2.5 * REJOIN_EVERY_S):  # back: not re-joined any more
                again = await next_of(moving, "welcome", within_s=10 * REJOIN_EVERY_S)
            assert again is None, "welcomed again: still counted as waiting for its zone"


async def test_a_zone_cut_off_from_nats_stops_before_its_lease_can_run_out(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A holder that cannot renew (NATS frozen: to it, a partition) must stop ticking
    before its key can expire, or a standby elsewhere would run the zone beside it."""
    nats = _nats(tmp_path)
    nats.start()
    try:
        own = dataclasses.replace(settings, nats_url=nats.url)
        async with running_process(own, nursery, Roles(http=False, zones=("z1",))) as running:
            world = running.services.world
            lease_s = world.directory.lease_s
            nats.pause()
            cut_off_at = trio.current_time()
            # Its last renewal was asked for before the pause: a lease from then at most.
            await eventually(_hosts(world, "z1", hosting=False), "the cut-off zone to stop",
                             tries=int(10 * lease_s))
            stopped_after_s = trio.current_time() - cut_off_at
            assert stopped_after_s >= (FENCE_AT - 1 / 3) * lease_s, "stopped too eagerly"
            assert await metric(running.metrics_url, "outpost_zone_stops_total",
                                zone="z1", reason="not_renewed") == 1
            nats.resume()
            await eventually(_hosts(world, "z1"), "the zone back once NATS is",
                             tries=int(30 * lease_s) + 50)  # its key expired meanwhile
    finally:
        nats.stop()


WAITING = 2000  # players waiting for their zone, as many as a busy zone has


class _Waiting:
    """A member whose zone is back, as the world sees it: no socket, nothing to say."""

    def __init__(self) -> None:
        self.session_id = uuid.uuid4().hex
        self.outlet = self

    def snapshot(self, view: View) -> None:
        pass

    def replaced(self) -> None:
        raise AssertionError("nobody else plays its character")

    def refused(self, code: str, message: str, seq: int) -> None:
        pass

    def zone_lost(self) -> None:
        pass

    def rejoin(self) -> None:
        pass


async def _characters(conn: asyncpg.Connection, zone_id: str,
                      count: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """`count` characters of users of their own in `zone_id`: (character id, user id)."""
    rows = [(uuid.uuid4(), uuid.uuid4(), f"Waiter{i}", zone_id) for i in range(count)]
    await conn.executemany(
        "INSERT INTO characters.characters (id, user_id, name, name_key, class, zone_id) "
        "VALUES ($1, $2, $3, lower($3), 'recruit', $4)", rows)
    return [(character_id, user_id) for character_id, user_id, _, _ in rows]


async def test_players_whose_zone_is_back_rejoin_without_crowding_postgres(
    settings: Settings, nursery: trio.Nursery
) -> None:
    """When a zone comes back, every player that waited for it is re-joined at once (each
    reads its character from Postgres). They must not all wait on the pool together: with
    2,000 of them most would wait past the deadline, fail, and try again a second later,
    over and over (a zone of 2,000 took 20 s to fill on a one-core bench). So the reads
    take turns, half a pool at a time; counted here at Postgres's door rather than timed
    against a short deadline, which a loaded machine can miss by itself."""
    zone = f"rejoin-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, world_zone_id=zone)
    async with running_process(own, nursery, Roles(http=False, zones=(zone,))) as running:
        use_api_loop(running)
        world, pg = running.services.world, running.services.pg
        characters = await pg.transact(_characters, zone, WAITING)
        reading, most_reading = 0, 0
        transact = pg.transact

        async def counted(work: Callable[..., Awaitable[object]], *args: object) -> object:
            nonlocal reading, most_reading
            reads = work is _read_owned
            reading += reads
            most_reading = max(most_reading, reading)
            try:
                return await transact(work, *args)
            finally:
                reading -= reads

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pg, "transact", counted)
            async with trio.open_nursery() as rejoining:
                for character_id, user_id in characters:
                    rejoining.start_soon(world.rejoin, user_id, character_id, _Waiting())
        assert most_reading == max(1, pg.max_size // 2)
        assert world.zones[zone].player_count == WAITING


async def test_a_rejoin_does_not_wait_behind_joins_a_zone_leaves_unanswered(
    settings: Settings, nursery: trio.Nursery
) -> None:
    """Re-joins take turns at Postgres only: a join of a zone that is heard but does not
    answer (its holder hung) waits out its timeout, and must not hold a turn meanwhile,
    or a pool's worth of such joins would stop every other player's re-join."""
    zone, hung = f"rejoin-{uuid.uuid4().hex[:8]}", f"hung-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, world_zone_id=zone)
    async with running_process(own, nursery, Roles(http=False, zones=(zone,))) as running:
        use_api_loop(running)
        world, pg = running.services.world, running.services.pg
        stuck = await pg.transact(_characters, hung, pg.max_size)  # twice the turns
        [(character_id, user_id)] = await pg.transact(_characters, zone, 1)
        given_up: list[uuid.UUID] = []

        async def rejoin_stuck(character_id: uuid.UUID, user_id: uuid.UUID) -> None:
            with pytest.raises(ZoneUnavailable):
                await world.rejoin(user_id, character_id, _Waiting())
            given_up.append(character_id)

        async with (running.services.bus.subscription(subjects.zone_join(hung)) as heard,
                    trio.open_nursery() as rejoining):
            for stuck_id, stuck_user in stuck:
                rejoining.start_soon(rejoin_stuck, stuck_id, stuck_user)
            for _ in stuck:  # every one of them is waiting for its answer now
                await heard.receive()
            await world.rejoin(user_id, character_id, _Waiting())
            assert given_up == [], "waited for the unanswered joins to time out"
        assert sorted(given_up) == sorted(c for c, _ in stuck)


def _hosts(world: World, zone_id: str, *, hosting: bool = True
           ) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (zone_id in world.zones) is hosting
    return check
