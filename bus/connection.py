"""The NATS actor: core publish/subscribe and JetStream behind the trio/asyncio bridge.

nats-py reconnects by itself once connected, but gives up if the very first
connect fails, so this actor owns that first connect and retries it: a process
can start while NATS is down, and the outbox keeps every event until it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import nats
import trio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError
from trio_asyncio import aio_as_trio

from bus.events import StreamSpec
from persistence.outbox import OutboxEvent

log = logging.getLogger(__name__)

CONNECT_RETRY_S = 0.5
PUBLISH_TIMEOUT_S = 2.0


class BusUnavailable(Exception):
    """NATS is not connected or did not acknowledge in time."""


class Bus:
    def __init__(self, url: str, *, name: str) -> None:
        self._url = url
        self._name = name
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self.connected_once = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[Bus] = trio.TASK_STATUS_IGNORED) -> None:
        nc = NatsClient()
        self._nc = nc
        task_status.started(self)
        try:
            while not nc.is_connected:
                try:
                    await aio_as_trio(nc.connect)(
                        servers=[self._url], name=self._name, connect_timeout=2,
                        allow_reconnect=True, max_reconnect_attempts=-1,
                        reconnect_time_wait=CONNECT_RETRY_S,
                        error_cb=_log_error, disconnected_cb=_log_disconnect,
                    )
                except (TimeoutError, nats.errors.Error, OSError) as exc:
                    log.warning("nats not reachable yet: %r", exc)
                    await trio.sleep(CONNECT_RETRY_S)
            self._js = nc.jetstream()
            self.connected_once.set()
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                if nc.is_connected:
                    await aio_as_trio(nc.drain)()
                elif nc.is_connecting or nc.is_reconnecting:
                    # Cancelled mid-connect (the api is up before NATS answers): close
                    # the socket the attempt holds, or it leaks past the loop.
                    await aio_as_trio(nc.close)()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def _client(self) -> tuple[NatsClient, JetStreamContext]:
        if self._nc is None or self._js is None or not self._nc.is_connected:
            raise BusUnavailable("NATS is not connected")
        return self._nc, self._js

    async def ensure_streams(self, specs: Sequence[StreamSpec]) -> None:
        """Create or update the streams; idempotent, whoever starts first."""
        _, js = self._client()
        try:
            await aio_as_trio(_ensure_streams)(js, specs)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusUnavailable(f"could not ensure streams: {exc!r}") from exc

    async def publish_persistent(self, events: Sequence[OutboxEvent]) -> list[bool]:
        """Publish to JetStream with Nats-Msg-Id; one crossing for the whole batch.

        Returns, per event, whether JetStream acknowledged it.
        """
        _, js = self._client()
        return await aio_as_trio(_publish_all)(js, events)

    async def publish(self, subject: str, payload: bytes) -> None:
        nc, _ = self._client()
        await aio_as_trio(nc.publish)(subject, payload)

    async def flush(self, timeout_s: float = 1.0) -> bool:
        try:
            nc, _ = self._client()
            await aio_as_trio(nc.flush)(timeout=timeout_s)
            return True
        except (TimeoutError, BusUnavailable, nats.errors.Error):
            return False

    @asynccontextmanager
    async def subscription(
        self, subject: str, *, buffer: int = 1000
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Msg]]:
        """Messages on `subject` as a Trio channel; a full channel drops (and logs)."""
        nc, _ = self._client()
        send, receive = trio.open_memory_channel[Msg](buffer)

        async def deliver(msg: Msg) -> None:
            try:
                send.send_nowait(msg)
            except trio.WouldBlock:
                log.warning("subscriber on %s is behind; dropped a message", subject)

        sub = await aio_as_trio(nc.subscribe)(subject, cb=deliver)
        try:
            async with receive:
                yield receive
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                if nc.is_connected:
                    await aio_as_trio(sub.unsubscribe)()


async def _ensure_streams(js: JetStreamContext, specs: Sequence[StreamSpec]) -> None:
    for spec in specs:
        config = StreamConfig(name=spec.name, subjects=list(spec.subjects),
                              storage=StorageType.FILE,
                              duplicate_window=spec.duplicate_window_s)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


async def _publish_all(js: JetStreamContext, events: Sequence[OutboxEvent]) -> list[bool]:
    results = await asyncio.gather(
        *(js.publish(e.subject, e.payload, timeout=PUBLISH_TIMEOUT_S,
                     headers={"Nats-Msg-Id": e.msg_id}) for e in events),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            log.warning("jetstream publish failed: %r", result)
            break
    return [not isinstance(r, BaseException) for r in results]


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %r", exc)


async def _log_disconnect() -> None:
    log.info("nats disconnected")
