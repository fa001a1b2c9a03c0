"""A game's facts on their way to JetStream (rules/api.py, `Fact`; docs/rules.md).

Zones hand their facts here as they happen (a kill: `combat.killed`); one task
publishes them in batches with their id as `Nats-Msg-Id`, and publishes again what
JetStream did not acknowledge, a second later, until it does. A fact is never doubled
(JetStream drops a re-sent id within its duplicate window of an hour) and is lost only
if the process dies before JetStream acknowledged it: the facts are kept in memory, not
in Postgres, because they are made at the tick rate and a zone never waits on a disk.
"""

from __future__ import annotations

import logging
from collections import deque

import orjson
import trio

from bus.connection import Bus, BusUnavailable
from bus.subjects import STREAMS
from persistence.outbox import OutboxEvent
from rules.api import Fact

log = logging.getLogger(__name__)

RETRY_S = 1.0
BATCH = 256
KEPT = 100_000  # facts waiting for JetStream; past this the oldest are dropped, and said


class FactRelay:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._waiting: deque[OutboxEvent] = deque()
        self._wake = trio.Event()
        self._sending = 0  # facts of the batch JetStream has not answered yet
        self.published = 0  # acknowledged by JetStream
        self.dropped = 0  # never published: too many waited

    def add(self, facts: list[Fact]) -> None:
        """Facts to announce (never blocks: the tick calls it)."""
        for fact in facts:
            self._waiting.append(OutboxEvent(fact.subject, fact.id, orjson.dumps(fact.data)))
        while len(self._waiting) > KEPT:
            self._waiting.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("facts dropped, JetStream too far behind: %d so far", self.dropped)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Facts not yet acknowledged: what a crash of the process would lose."""
        return len(self._waiting) + self._sending

    async def run(self) -> None:
        while True:  # a zone process may be the first to publish a fact: its streams
            try:
                await self._bus.ensure_streams(STREAMS)
                break
            except BusUnavailable as exc:
                log.warning("facts wait for JetStream: %s", exc)
                await trio.sleep(RETRY_S)
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._waiting:
                batch = [self._waiting.popleft() for _ in range(min(BATCH, len(self._waiting)))]
                self._sending = len(batch)
                try:
                    acked = await self._bus.publish_persistent(batch)
                except BusUnavailable as exc:
                    log.warning("facts not published (%d waiting): %s", len(batch), exc)
                    acked = [False] * len(batch)
                finally:
                    self._sending = 0
                unacked = [event for event, ok in zip(batch, acked, strict=True) if not ok]
                self.published += len(batch) - len(unacked)
                if unacked:
                    self._waiting.extendleft(reversed(unacked))
                    await trio.sleep(RETRY_S)
