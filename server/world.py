"""The world as sessions see it: the zones this process runs, and the way in.

`World.enter` checks ownership through the character service, finds the
character's zone and joins it; the zone's hooks save positions through the
character store (and invalidate the cached lists they change) and publish
`player.moved` in one batch per tick.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import trio

from bus import events
from bus.connection import Bus
from persistence.cache import Cache
from persistence.characters import Character, cache_key, get_character, update_positions
from persistence.errors import Forbidden, NotFound, ZoneUnavailable
from persistence.postgres import Postgres
from server.config import Settings
from zones.actor import Admission, Entrant, Outlet, Position, ZoneActor, ZoneHooks
from zones.simulation import Bounds, Rules


@dataclass(frozen=True)
class Entered:
    character: Character
    admission: Admission
    zone: ZoneActor


class World:
    def __init__(self, settings: Settings, pg: Postgres, cache: Cache, bus: Bus) -> None:
        self._settings = settings
        self._pg = pg
        self._cache = cache
        self._bus = bus
        self.zones: dict[str, ZoneActor] = {}

    async def start_zone(self, nursery: trio.Nursery, zone_id: str) -> ZoneActor:
        s = self._settings
        rules = Rules(Bounds(*s.world_bounds), max_step=s.world_max_step)
        zone = ZoneActor(zone_id, rules, ZoneHooks(self._save_positions, self._publish_moves),
                         tick_rate_hz=s.world_tick_rate_hz, checkpoint_s=s.world_checkpoint_s)
        self.zones[zone_id] = await nursery.start(zone.run)
        return zone

    async def enter(self, user_id: uuid.UUID, character_id: uuid.UUID,
                    outlet: Outlet) -> Entered:
        character = await self._pg.transact(get_character, character_id)
        if character is None:
            raise NotFound("no such character")
        if character.user_id != user_id:
            raise Forbidden("that character is not yours")
        zone = self.zones.get(character.zone_id)
        if zone is None:
            raise ZoneUnavailable(f"zone {character.zone_id} is not available")
        entrant = Entrant(str(character.id), str(character.user_id), character.name,
                          character.x, character.y)
        return Entered(character, await zone.join(entrant, outlet), zone)

    async def _save_positions(self, positions: list[Position]) -> None:
        await self._pg.transact(update_positions, [
            (uuid.UUID(p.character_id), p.zone_id, p.x, p.y) for p in positions])
        # Cached character lists show positions: drop the ones this save made stale.
        await self._cache.invalidate(*{cache_key(uuid.UUID(p.user_id)) for p in positions})

    async def _publish_moves(self, payloads: list[bytes]) -> None:
        await self._bus.publish_many(events.PLAYER_MOVED, payloads)
