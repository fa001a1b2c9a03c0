"""What a kill does outside its zone, by choreography (docs/protocol.md, "combat.killed"):
two durable consumers of `combat.killed`. The player service counts a kill for the
killer and a death for the victim; the progression service awards the killer
experience. Each writes only its own schema, once per event id, however often the event
is delivered (tables of the events each has counted), like the provisioning consumers.
"""

from __future__ import annotations

import trio

from bus import events, subjects
from bus.connection import Bus, ConsumerSpec
from bus.consumer import ConsumerWorker
from bus.events import CombatKilled
from persistence.players import count_kills
from persistence.postgres import Postgres
from persistence.progression import award_kills

SERVICES = ("player-service-kills", "progression-service-kills")


class KillConsumers:
    def __init__(self, pg: Postgres, bus: Bus) -> None:
        self._pg = pg
        self._bus = bus
        self.workers: list[ConsumerWorker[CombatKilled]] = []  # once started

    async def run(
        self, *, task_status: trio.TaskStatus[KillConsumers] = trio.TASK_STATUS_IGNORED
    ) -> None:
        handlers = {"player-service-kills": self._count, "progression-service-kills": self._award}
        async with trio.open_nursery() as nursery:
            for durable in SERVICES:
                spec = ConsumerSpec(stream="COMBAT", durable=durable,
                                    subject=subjects.COMBAT_KILLED)
                worker = ConsumerWorker(self._bus, spec, events.parse_combat_killed,
                                        handlers[durable])
                await nursery.start(worker.run)
                self.workers.append(worker)
            task_status.started(self)

    async def _count(self, kills: list[CombatKilled]) -> None:
        await self._pg.transact(count_kills, [
            (k.event_id, k.killer_user_id, k.victim_user_id) for k in kills])

    async def _award(self, kills: list[CombatKilled]) -> None:
        await self._pg.transact(award_kills, [(k.event_id, k.killer_user_id) for k in kills])
