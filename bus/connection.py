"""The NATS actor: core publish/subscribe and JetStream behind the trio/asyncio bridge.

nats-py reconnects by itself once connected, but gives up if the very first
connect fails, so this actor owns that first connect and retries it: a process
can start while NATS is down, and the outbox keeps every event until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

import nats
import nats.js.errors
import trio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from trio_asyncio import aio_as_trio

from bus.subjects import StreamSpec
from persistence.errors import Refusal, Refused, refusal_of_tls
from persistence.outbox import OutboxEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_RETRY_S = 0.5
PING_WAIT_S = 0.5  # for one PONG: a live NATS answers in a millisecond, a loaded one in tens
PUBLISH_TIMEOUT_S = 2.0


class BusUnavailable(Exception):
    """NATS is not connected or did not acknowledge in time."""


@dataclass(frozen=True)
class Message:
    """A core NATS message, as Trio code sees it."""

    subject: str
    data: bytes
    headers: dict[str, str]
    reply: str = ""  # where a request wants its answer


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer with explicit acks and bounded redelivery."""

    stream: str
    durable: str
    subject: str
    ack_wait_s: float = 10.0
    max_deliver: int = 5


@dataclass(frozen=True, eq=False)
class Delivery:
    """A JetStream message handed to Trio code; settled through its PullConsumer."""

    subject: str
    data: bytes = field(repr=False)  # a user.registered holds an email: never in a log
    attempt: int  # 1 on first delivery
    stream: str
    sequence: int  # in its stream: `nats stream get <stream> <sequence>` shows it
    msg_id: str | None  # its Nats-Msg-Id, the id of the event it carries
    _msg: Msg = field(repr=False)

    def __str__(self) -> str:
        """What a log line may say of it: where to find it, never what it holds."""
        return (f"{self.subject} (stream {self.stream} sequence {self.sequence}, "
                f"Nats-Msg-Id {self.msg_id or 'none'})")


class PullConsumer:
    """A bound pull subscription; each method is one crossing of the bridge.

    Settling is best effort: a message NATS does not hear of is redelivered after
    AckWait, and every handler is idempotent.
    """

    def __init__(self, sub: JetStreamContext.PullSubscription) -> None:
        self._sub = sub

    async def fetch(self, batch: int, timeout_s: float) -> list[Delivery]:
        """Up to `batch` messages; [] when none arrived within `timeout_s`."""
        try:
            msgs = await aio_as_trio(self._sub.fetch)(batch, timeout=timeout_s)
        except TimeoutError:  # nats-py raises both its own and asyncio's: nothing came
            return []
        except (nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"fetch failed: {exc!r}") from exc
        return [Delivery(m.subject, m.data, m.metadata.num_delivered, m.metadata.stream,
                         m.metadata.sequence.stream, (m.headers or {}).get("Nats-Msg-Id"), m)
                for m in msgs]

    async def settle(self, *, acked: Sequence[Delivery], terminated: Sequence[Delivery],
                     retry: Sequence[tuple[Delivery, float]]) -> None:
        """Ack, terminate, and nak with a redelivery delay, in one crossing."""
        await aio_as_trio(_settle)([d._msg for d in acked], [d._msg for d in terminated],
                                   [(d._msg, delay) for d, delay in retry])

    async def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Reset the AckWait of messages still being worked on."""
        await aio_as_trio(_settle)([], [], [], [d._msg for d in deliveries])

    async def pending(self) -> int:
        """Messages of the consumer not settled yet: not delivered, or delivered and not
        acknowledged."""
        try:
            info = await aio_as_trio(self._sub.consumer_info)()
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"consumer info failed: {exc!r}") from exc
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def unsubscribe(self) -> None:
        with suppress(nats.errors.Error, OSError):
            await aio_as_trio(self._sub.unsubscribe)()


class Bus:
    def __init__(self, url: str, *, name: str, replicas: int = 1,
                 tls: ssl.SSLContext | None = None, creds_file: str = "") -> None:
        self._servers = url.split(",")  # a cluster's servers: any of them will do
        self._name = name
        self.replicas = replicas  # of every stream and key-value bucket it creates
        # Credentials in the URL (user:password@, token@) are nats-py's to read; a
        # credentials file (a user JWT and its nkey seed) and a TLS context are given apart.
        self._tls = tls
        self._creds_file = creds_file
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self.connected_once = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[Bus] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and report ready once connected or once a first attempt found NATS not
        reachable (the process starts without it). Refused, before or after reporting
        ready, if NATS turns the credentials or TLS away."""
        nc = NatsClient()
        self._nc = nc
        tried = trio.Event()
        try:
            async with trio.open_nursery() as connecting:
                connecting.start_soon(self._connect, nc, tried)
                await tried.wait()
                task_status.started(self)
            self._js = nc.jetstream()
            self.connected_once.set()
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                # Flush what was published, then close. Not drain(): it waits for every
                # subscription's queue to empty, and a pull subscription can hold
                # messages nobody will fetch now (JetStream redelivers them anyway).
                # Close also ends a connect cancelled mid-attempt, whose socket would
                # otherwise leak past the loop.
                if nc.is_connected:
                    with suppress(nats.errors.Error, TimeoutError):
                        await aio_as_trio(nc.flush)(timeout=1)
                if not nc.is_closed:
                    await aio_as_trio(nc.close)()

    async def _connect(self, nc: NatsClient, tried: trio.Event) -> None:
        failures = 0

        async def on_error(exc: Exception) -> None:
            nonlocal failures
            if self.connected_once.is_set():
                log.warning("nats: %r", exc)
                return
            refusal = _refusal(exc)
            if refusal is not None:
                # Raised out of nats-py's connect(), which calls this from its retry loop.
                raise Refused("nats", refusal, str(exc)) from None
            log.warning("nats not reachable yet: %r", exc)
            # Not at the first failure: under TLS 1.3 a server that refuses the client's
            # certificate first reads as a connection reset, and says why only after.
            failures += 1
            if failures > 1:
                tried.set()

        while not nc.is_connected:
            try:
                await aio_as_trio(nc.connect)(
                    servers=self._servers, name=self._name, connect_timeout=2,
                    allow_reconnect=True, max_reconnect_attempts=-1,
                    reconnect_time_wait=CONNECT_RETRY_S, error_cb=on_error,
                    disconnected_cb=_log_disconnect, tls=self._tls,
                    user_credentials=self._creds_file or None,
                )
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.warning("nats not reachable yet: %r", exc)
                tried.set()
                await trio.sleep(CONNECT_RETRY_S)
        tried.set()

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
            await aio_as_trio(_ensure_streams)(js, specs, self.replicas)
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusUnavailable(f"could not ensure streams: {exc!r}") from exc

    async def publish_persistent(self, events: Sequence[OutboxEvent]) -> list[bool]:
        """Publish to JetStream with Nats-Msg-Id; one crossing for the whole batch.

        Returns, per event, whether JetStream acknowledged it.
        """
        _, js = self._client()
        acked: list[bool] = await aio_as_trio(_publish_all)(js, events)
        return acked

    async def pull_consumer(self, spec: ConsumerSpec) -> PullConsumer:
        """Create or update the durable consumer `spec` and bind a pull subscription to it."""
        _, js = self._client()
        try:
            return PullConsumer(await aio_as_trio(_bind_pull_consumer)(js, spec))
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"could not bind {spec.durable}: {exc!r}") from exc

    async def request(self, subject: str, payload: bytes, *, timeout_s: float) -> bytes:
        """Core NATS request/reply; BusUnavailable if nobody answers in time."""
        nc, _ = self._client()
        try:
            reply = await aio_as_trio(nc.request)(subject, payload, timeout=timeout_s)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"no answer on {subject}: {exc!r}") from exc
        return bytes(reply.data)

    async def on_jetstream(self, work: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run `work(js, *args)`, an asyncio coroutine of the bus package, in one crossing;
        NATS errors other than a `nats.js.errors.KeyValueError` become BusUnavailable."""
        _, js = self._client()
        try:
            result: T = await aio_as_trio(work)(js, *args)
            return result
        except nats.js.errors.KeyValueError:
            raise
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"jetstream: {exc!r}") from exc

    async def publish_many(self, subject: str, payloads: Sequence[bytes]) -> None:
        """Core NATS, best effort (no ack): the whole batch in one crossing."""
        nc, _ = self._client()
        await aio_as_trio(_publish_many)(nc, subject, payloads)

    async def flush(self, timeout_s: float = 1.0) -> bool:
        """True if NATS answers a ping within `timeout_s`: what was published has reached
        it. Waits out the first connect and a reconnect under way (nats-py reconnects
        every CONNECT_RETRY_S; its flush() does not wait for that itself). A ping sent on
        a connection that died before nats-py noticed (a server restarted while this
        process was busy) is never answered: nats-py forgets it as it reconnects. So each
        ping waits PING_WAIT_S, and another is sent on the new connection. (Before, the
        first /readyz after a NATS restart could answer 503 although NATS was back.)"""
        with trio.move_on_after(timeout_s):
            await self.connected_once.wait()
            nc = self._nc
            assert nc is not None
            while not nc.is_closed:
                # Polled: nats-py tells of a reconnect only on its asyncio side.
                if not nc.is_connected:
                    await trio.sleep(CONNECT_RETRY_S / 10)
                    continue
                try:
                    await aio_as_trio(nc.flush)(timeout=PING_WAIT_S)
                except (TimeoutError, nats.errors.Error):
                    await trio.sleep(CONNECT_RETRY_S / 10)
                    continue
                if nc.is_connected:
                    return True
                # Not connected after all: nats-py's flush() returns at once, without a
                # ping, once its read loop has ended (the server went away), and only then
                # does it start to reconnect. Wait for that, and ask again.
        return False

    @asynccontextmanager
    async def subscription(
        self, subject: str, *, buffer: int = 1000
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
        """Messages on `subject` as a Trio channel; a full channel drops (and logs)."""
        nc, _ = self._client()
        send, receive = trio.open_memory_channel[Message](buffer)

        async def deliver(msg: Msg) -> None:
            try:
                send.send_nowait(Message(msg.subject, msg.data, dict(msg.headers or {}),
                                         msg.reply))
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


async def _ensure_streams(js: JetStreamContext, specs: Sequence[StreamSpec],
                          replicas: int) -> None:
    for spec in specs:
        config = StreamConfig(name=spec.name, subjects=list(spec.subjects),
                              storage=StorageType.FILE, num_replicas=replicas,
                              duplicate_window=spec.duplicate_window_s)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


async def _bind_pull_consumer(
    js: JetStreamContext, spec: ConsumerSpec
) -> JetStreamContext.PullSubscription:
    config = ConsumerConfig(
        durable_name=spec.durable, name=spec.durable, filter_subject=spec.subject,
        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s, max_deliver=spec.max_deliver,
    )
    await js.add_consumer(spec.stream, config=config)
    return await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)


async def _settle(acked: list[Msg], terminated: list[Msg], retry: list[tuple[Msg, float]],
                  in_progress: Sequence[Msg] = ()) -> None:
    try:
        for msg in acked:
            await msg.ack()
        for msg in terminated:
            await msg.term()
        for msg, delay in retry:
            await msg.nak(delay=delay)
        for msg in in_progress:
            await msg.in_progress()
    except (nats.errors.Error, OSError) as exc:
        log.warning("jetstream settle failed (messages will be redelivered): %r", exc)


async def _publish_many(nc: NatsClient, subject: str, payloads: Sequence[bytes]) -> None:
    # nats-py's publish() costs several microseconds of Python per message, which at
    # thousands of player.moved a second is a few percent of a core. The PUB commands of
    # a batch are the same bytes publish() would queue (NATS protocol: "PUB <subject>
    # <size>"), handed to the client's outgoing queue as one buffer. Private methods of
    # nats-py 2.x, covered by tests/test_world.py::test_player_moved_is_published.
    if not nc.is_connected:
        raise BusUnavailable("NATS is not connected")
    head = b"PUB " + subject.encode() + b" "
    await nc._send_command(b"".join(b"%s%d\r\n%s\r\n" % (head, len(p), p) for p in payloads))
    await nc._flush_pending()


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


def _refusal(exc: Exception) -> Refusal | None:
    """Whether a failed connect was NATS turning this process away (its credentials: the
    server says "Authorization Violation", or that they expired or were revoked; or TLS),
    rather than NATS not being reachable."""
    if isinstance(exc, nats.errors.AuthorizationError) or (
            isinstance(exc, nats.errors.Error)
            and ("authorization" in str(exc).lower() or "authentication" in str(exc).lower())):
        return "credentials"
    return refusal_of_tls(exc)


async def _log_disconnect() -> None:
    log.info("nats disconnected")
