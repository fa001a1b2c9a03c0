"""The outbox relay: moves committed events from Postgres to JetStream.

Woken right after a commit (and by a poll, for rows other processes wrote or
that waited out an outage). A row is deleted only after JetStream acknowledged
it; if the process dies in between, the row is sent again and JetStream drops
the copy by its Nats-Msg-Id. So an outage or a crash delays an event but never
loses or doubles it. Several relays (one per api process) may run at once for
the same reason.
"""

from __future__ import annotations

import logging
from contextlib import suppress

import trio

from bus.connection import Bus, BusUnavailable
from bus.subjects import STREAMS
from persistence.errors import Unavailable
from persistence.outbox import backlog, delete_events, pending_events
from persistence.postgres import Postgres

log = logging.getLogger(__name__)

BATCH = 200


class OutboxRelay:
    def __init__(self, pg: Postgres, bus: Bus, *, poll_s: float) -> None:
        self._pg = pg
        self._bus = bus
        self._poll_s = poll_s
        self._wakeup = trio.Event()
        self._streams_ready = False
        self.relayed = 0
        # What waits in the outbox, as of the last attempt (GET /metrics): 0 once drained,
        # counted while NATS fails, kept while Postgres does. Every relay sees the one table.
        self.pending = 0
        self.oldest_s = 0.0

    def wake(self) -> None:
        """Something was committed to the outbox: relay it now rather than at the next poll."""
        self._wakeup.set()

    async def run(
        self, *, task_status: trio.TaskStatus[OutboxRelay] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self)
        while True:
            with trio.move_on_after(self._poll_s):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            try:
                while await self._relay_batch():
                    pass
                self.pending, self.oldest_s = 0, 0.0  # drained, as far as this relay saw
            except BusUnavailable as exc:
                # Not fatal: the rows stay in the outbox until the next attempt.
                log.info("outbox relay waiting: %s", exc)
                self._streams_ready = False
                await self._measure()
            except Unavailable as exc:
                log.info("outbox relay waiting: %s", exc)  # the last count stands
            except Exception:
                # Nor is anything else: the relay must outlive a bad moment of a driver.
                log.exception("outbox relay failed; retrying at the next poll")
                self._streams_ready = False

    async def _measure(self) -> None:
        with suppress(Unavailable):  # gone since: the last count stands
            self.pending, self.oldest_s = await self._pg.transact(backlog)

    async def _relay_batch(self) -> bool:
        """Relay one batch; True when a full batch went out and more may wait."""
        batch = await self._pg.transact(pending_events, BATCH)
        if not batch:
            return False
        if not self._streams_ready:
            await self._bus.ensure_streams(STREAMS)
            self._streams_ready = True
        acked = await self._bus.publish_persistent([p.event for p in batch])
        done = [p.row_id for p, ok in zip(batch, acked, strict=True) if ok]
        if done:
            await self._pg.transact(delete_events, done)
            self.relayed += len(done)
        if len(done) < len(batch):
            raise BusUnavailable(f"{len(batch) - len(done)} events not acknowledged")
        return len(batch) == BATCH
