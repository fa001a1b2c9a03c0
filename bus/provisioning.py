"""New-user provisioning by choreography: four durable consumers of `user.registered`.

Auth only announces the registration; each service reacts on its own, writes only
its own schema, and is idempotent (a redelivered or duplicated event changes
nothing). Each consumer is its own task and its own durable consumer, so one can
fall behind or fail without touching the others.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from bus import events, subjects
from bus.connection import Bus, ConsumerSpec
from bus.consumer import ConsumerWorker
from bus.events import UserRegistered
from persistence.buildings import provision_buildings
from persistence.players import Player, provision_players
from persistence.postgres import Postgres
from persistence.progression import provision_progressions

SERVICES = ("player-service", "character-service", "progression-service", "building-service")


class DefaultCharacters(Protocol):
    """The character service, as its consumer calls it (characters/service.py)."""

    async def provision_defaults(self, user_ids: list[uuid.UUID]) -> None: ...


def consumer_spec(durable: str) -> ConsumerSpec:
    return ConsumerSpec(stream="USERS", durable=durable, subject=subjects.USER_REGISTERED)


class Provisioner:
    def __init__(self, pg: Postgres, bus: Bus, characters: DefaultCharacters) -> None:
        self._pg = pg
        self._bus = bus
        self._characters_service = characters
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
        await self._characters_service.provision_defaults([e.user_id for e in registered])

    async def _progressions(self, registered: list[UserRegistered]) -> None:
        await self._pg.transact(provision_progressions, [e.user_id for e in registered])

    async def _buildings(self, registered: list[UserRegistered]) -> None:
        await self._pg.transact(provision_buildings, [e.user_id for e in registered])
