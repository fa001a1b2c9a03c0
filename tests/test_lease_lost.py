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

import httpx
import orjson
import trio
from nats.js import JetStreamContext

from bus.directory import BUCKET
from server.config import Settings
from server.devstack import _nats
from server.process import Roles
from tests.helpers import eventually, running_process, use_api_loop
from tests.world import connect, joined, new_player, next_of, send, snapshot_with, ws_url
from zones.host import FENCE_AT
from zones.remote import REJOIN_EVERY_S
from zones.world import World


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
            nats.resume()
            await eventually(_hosts(world, "z1"), "the zone back once NATS is",
                             tries=int(30 * lease_s) + 50)  # its key expired meanwhile
    finally:
        nats.stop()


def _hosts(world: World, zone_id: str, *, hosting: bool = True
           ) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (zone_id in world.zones) is hosting
    return check
