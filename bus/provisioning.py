"""New-user provisioning by choreography: four durable consumers of `user.registered`.

Auth only announces the registration; each service reacts on its own, writes only
its own schema, and is idempotent (a redelivered or duplicated event changes
nothing). Each consumer is its own task and its own durable consumer, so one can
fall behind or fail without touching the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from bus import events, subjects
from bus.connection import Bus, ConsumerSpec
from bus.consumer import ConsumerWorker
from bus.events import UserRegistered
from persistence.buildings import provision_buildings
from persistence.cache import Cache
from persistence.characters import cache_key, provision_default_characters
from persistence.players import Player, provision_players
from persistence.postgres import Postgres
from persistence.progression import provision_progressions

SERVICES = ("player-service", "character-service", "progression-service", "building-service")


def consumer_spec(durable: str) -> ConsumerSpec:
    return ConsumerSpec(stream="USERS", durable=durable, subject=subjects.USER_REGISTERED)


class Provisioner:
    def __init__(self, pg: Postgres, cache: Cache, bus: Bus, *, zone_id: str,
                 on_committed: Callable[[], None]) -> None:
        self._pg = pg
        self._cache = cache
        self._bus = bus
        self._zone_id = zone_id
        self._on_committed = on_committed  # wakes the outbox relay
        self.workers: list[ConsumerWorker[UserRegistered]] = []  # once started

    async def run(
        self, *, task_status: trio.TaskStatus[Provisioner] = trio.TASK_STATUS_IGNORED
    ) -> None:
        handlers: dict[str, Callable[[list[UserRegistered]], Awaitable[None]]] = {
            "player-service": self._players, "character-service": self._characters,
            "progression-service": self._progressions, "building-service": self._buildings,
        }
        async with trio.open_nursery() as nursery:
            for durable in SERVICES:
                worker = ConsumerWorker(self._bus, consumer_spec(durable),
                                        events.parse_user_registered, handlers[durable])
                await nursery.start(worker.run)
                self.workers.append(worker)
            task_status.started(self)

    async def _players(self, registered: list[UserRegistered]) -> None:
        await self._pg.transact(provision_players, [
            Player(e.user_id, e.username, e.registered_at) for e in registered])

    async def _characters(self, registered: list[UserRegistered]) -> None:
        user_ids = [e.user_id for e in registered]
        created = await self._pg.transact(provision_default_characters, user_ids,
                                          zone_id=self._zone_id, announce=events.character_created)
        if created:
            self._on_committed()
        # Also on a redelivery: the first delivery may have died between commit and here.
        await self._cache.invalidate(*(cache_key(u) for u in user_ids))

    async def _progressions(self, registered: list[UserRegistered]) -> None:
        await self._pg.transact(provision_progressions, [e.user_id for e in registered])

    async def _buildings(self, registered: list[UserRegistered]) -> None:
        await self._pg.transact(provision_buildings, [e.user_id for e in registered])
