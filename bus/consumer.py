"""The Trio worker that drives one durable JetStream consumer.

It fetches a batch (one crossing), applies the whole batch in one unit of work
(one Postgres transaction, so a consumer keeps up however busy the process is),
and settles the batch (one crossing): acked when handled, terminated when
malformed or out of deliveries (logged by its stream sequence and message id,
never its content: a user.registered holds an email; the dead letter stays in
the stream to be read there),
redelivered after a delay when handling failed. A failed batch is retried
message by message, so one bad message holds back no other. An outage of
Postgres is not the messages' fault and must not use up their deliveries: the
worker holds them, tells JetStream they are still in progress, and retries in
place until the database is back. Cancelled mid-batch, it settles what it
finished and hands the rest back at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from bus.connection import Bus, BusUnavailable, ConsumerSpec, Delivery, PullConsumer
from bus.events import MalformedEvent
from bus.subjects import STREAMS
from persistence.errors import Unavailable

log = logging.getLogger(__name__)

BATCH = 64
FETCH_TIMEOUT_S = 1.0  # a long poll, short so a cancelled fetch leaves no stale pull behind
SETTLE_TIMEOUT_S = 2.0
PENDING_EVERY_S = 1.0  # how often the consumer's backlog is asked for (GET /metrics)
RETRY_S = 0.5  # after a NATS error, and while Postgres is down
CRASH_BACKOFF_S = 1.0
# Redelivery delay after a handler failure, by attempt (the last one repeats).
NAK_DELAYS_S = (0.2, 1.0, 5.0)

E = TypeVar("E")


@dataclass
class _Settlement:
    acked: list[Delivery] = field(default_factory=list)
    terminated: list[Delivery] = field(default_factory=list)
    retry: list[tuple[Delivery, float]] = field(default_factory=list)


class ConsumerWorker(Generic[E]):
    """One durable consumer: `parse` turns a message into an event (or raises
    MalformedEvent), `handle` applies a batch of events in one unit of work,
    idempotently. `handle` raises Unavailable for an outage, anything else for a
    failure; a failed batch is retried message by message to find the culprit."""

    def __init__(self, bus: Bus, spec: ConsumerSpec, parse: Callable[[bytes], E],
                 handle: Callable[[list[E]], Awaitable[None]]) -> None:
        self._bus = bus
        self.spec = spec
        self._parse = parse
        self._handle = handle
        # GET /metrics: the backlog as JetStream last told it, and deliveries since start
        # that were not the first of their message, or that ended as dead letters.
        self.pending = 0
        self.redelivered = 0
        self.dead_letters = 0

    async def run(
        self, *, task_status: trio.TaskStatus[ConsumerWorker[E]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started(self)
        await self._bus.connected_once.wait()
        while True:
            try:
                await self._consume()
            except BusUnavailable as exc:
                log.info("%s waiting for NATS: %s", self.spec.durable, exc)
                await trio.sleep(RETRY_S)
            except Exception:
                # A bug in one consumer must not stop the other consumers of the process.
                log.exception("%s crashed; restarting", self.spec.durable)
                await trio.sleep(CRASH_BACKOFF_S)

    async def _consume(self) -> None:
        await self._bus.ensure_streams(STREAMS)
        consumer = await self._bus.pull_consumer(self.spec)
        asked_at = -PENDING_EVERY_S
        try:
            while True:
                await self._process(consumer, await consumer.fetch(BATCH, FETCH_TIMEOUT_S))
                if trio.current_time() - asked_at >= PENDING_EVERY_S:
                    asked_at = trio.current_time()
                    # Only for /metrics: a failed ask keeps the last count and must not
                    # restart the consumer (a NATS that is really gone fails the fetch).
                    with suppress(BusUnavailable):
                        self.pending = await consumer.pending()
        finally:
            with trio.move_on_after(SETTLE_TIMEOUT_S) as scope:
                scope.shield = True
                await consumer.unsubscribe()

    async def _process(self, consumer: PullConsumer, batch: list[Delivery]) -> None:
        self.redelivered += sum(1 for d in batch if d.attempt > 1)
        settled = _Settlement()
        try:
            parsed: list[tuple[Delivery, E]] = []
            for delivery in batch:
                event = self._parse_or_log(delivery)
                if event is None:
                    settled.terminated.append(delivery)
                else:
                    parsed.append((delivery, event))
            failure = await self._attempt(consumer, parsed)
            if failure is None:
                settled.acked += [d for d, _ in parsed]
            elif len(parsed) == 1:
                self._after_failure(parsed[0][0], failure, settled)
            else:  # one bad message must not hold back the others: find it
                for delivery, event in parsed:
                    failure = await self._attempt(consumer, [(delivery, event)])
                    if failure is None:
                        settled.acked.append(delivery)
                    else:
                        self._after_failure(delivery, failure, settled)
        finally:
            # Cancelled mid-batch: what is not settled goes back at once.
            done = {*settled.acked, *settled.terminated, *(d for d, _ in settled.retry)}
            settled.retry += [(d, 0.0) for d in batch if d not in done]
            with trio.move_on_after(SETTLE_TIMEOUT_S) as scope:
                scope.shield = True
                await consumer.settle(acked=settled.acked, terminated=settled.terminated,
                                      retry=settled.retry)

    def _parse_or_log(self, delivery: Delivery) -> E | None:
        try:
            return self._parse(delivery.data)
        except MalformedEvent as exc:
            log.error("%s: terminating malformed %s: %s", self.spec.durable, delivery, exc)
            self.dead_letters += 1
            return None

    async def _attempt(self, consumer: PullConsumer,
                       parsed: list[tuple[Delivery, E]]) -> Exception | None:
        """Handle `parsed` as one batch; the failure, or None. Waits out outages."""
        while parsed:
            try:
                await self._handle([event for _, event in parsed])
                return None
            except Unavailable as exc:
                log.warning("%s: holding %d messages until Postgres is back: %s",
                            self.spec.durable, len(parsed), exc)
                await consumer.keep_alive([d for d, _ in parsed])
                await trio.sleep(RETRY_S)
            except Exception as exc:
                return exc
        return None

    def _after_failure(self, delivery: Delivery, failure: Exception,
                       settled: _Settlement) -> None:
        durable, attempt = self.spec.durable, delivery.attempt
        if attempt >= self.spec.max_deliver:
            log.error("%s: dead letter after %d attempts, terminating %s", durable,
                      attempt, delivery, exc_info=failure)
            self.dead_letters += 1
            settled.terminated.append(delivery)
        else:
            log.error("%s: attempt %d of %s failed; it will be redelivered", durable, attempt,
                      delivery, exc_info=failure)
            settled.retry.append((delivery, NAK_DELAYS_S[min(attempt, len(NAK_DELAYS_S)) - 1]))
