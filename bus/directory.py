"""The zone directory: which process runs which zone, on a JetStream key-value bucket.

Each zone is a key whose value says who holds it (and its latest stats). The
bucket's TTL is the lease: a holder renews its key every third of it with a
compare-and-set on the revision it wrote last; a holder that dies stops
renewing and the key expires, so a standby's create (which succeeds only for an
absent key) takes the zone over. Renewing with the wrong revision means someone
else holds the zone now: the old holder must stop running it.

The TTL is the bucket's, set by the first process that made it. A process whose
ZONE_LEASE differs says so loudly when it opens the directory, and uses the
bucket's TTL, so that every holder renews in time and every watcher judges by
the same lease.

Every process can watch the directory: the zones it holds now, then each claim,
renewal and release as it happens. Nobody is told when a key expires (the stream
drops it silently); a watcher knows a holder died when its renewals stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import NamedTuple

import nats.js.errors
import trio
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from bus.connection import Bus, BusUnavailable

log = logging.getLogger(__name__)

BUCKET = "ZONES"

WATCH_STOP_TIMEOUT_S = 1.0


class ZoneDirectory:
    def __init__(self, bus: Bus, *, lease_s: float) -> None:
        self._bus = bus
        self.lease_s = lease_s

    async def open(self) -> None:
        """Make the bucket if there is none; take its TTL as the lease (see above)."""
        ttl = await self._bus.on_jetstream(_ttl, self._shape)
        if ttl != self.lease_s:
            log.error("ZONE_LEASE is %g s but the zone directory (the JetStream bucket %s) "
                      "keeps keys for %g s, as the process that made it asked; this process "
                      "uses %g s. Give every process the same ZONE_LEASE, or delete the "
                      "bucket while no zone runs to change it.",
                      self.lease_s, BUCKET, ttl, ttl)
            self.lease_s = ttl

    async def claim(self, zone_id: str, value: bytes) -> int | None:
        """Take the zone if nobody holds it: the revision to renew against, else None."""
        try:
            return await self._bus.on_jetstream(_create, self._shape, zone_id, value)
        except nats.js.errors.KeyValueError:
            return None

    async def holder(self, zone_id: str) -> bytes | None:
        """The zone's key as its holder wrote it last; None if nobody holds it."""
        return await self._bus.on_jetstream(_get, self._shape, zone_id)

    async def renew(self, zone_id: str, value: bytes, revision: int) -> int | None:
        """Extend the lease: the new revision, or None if the zone is no longer ours."""
        try:
            return await self._bus.on_jetstream(_update, self._shape, zone_id, value,
                                                revision)
        except nats.js.errors.KeyValueError:
            return None

    async def release(self, zone_id: str, revision: int) -> None:
        """Give the zone up now (a graceful stop), so a standby need not wait the lease out."""
        with suppress(nats.js.errors.KeyValueError):  # not ours any more: nothing to do
            await self._bus.on_jetstream(_delete, self._shape, zone_id, revision)

    @property
    def _shape(self) -> _Shape:
        return _Shape(self.lease_s, self._bus.replicas)

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[DirectoryWatch]:
        """A watch of the whole directory: first every key held now, then each claim,
        renewal and release as it happens."""
        watch = DirectoryWatch(await self._bus.on_jetstream(_watch, self._shape), self._bus)
        try:
            yield watch
        finally:
            with trio.move_on_after(WATCH_STOP_TIMEOUT_S) as scope:
                scope.shield = True
                await watch.stop()


class DirectoryWatch:
    """Each `next` is one crossing of the bridge that returns within `wait_s` whatever
    happens, so that a cancellation nats-py swallows on the asyncio side (its
    asyncio.wait_for can, on Python 3.11) delays a shutdown by `wait_s` at most
    instead of hanging it."""

    def __init__(self, watcher: KeyValue.KeyWatcher, bus: Bus) -> None:
        self._watcher = watcher
        self._bus = bus

    async def next(self, wait_s: float) -> tuple[str, bytes | None] | None:
        """The next change: a zone and its holder's value as it was written (None once
        released; the holder's own encoding, zones/contract.py), or None if nothing
        changed within `wait_s`."""
        return await self._bus.on_jetstream(_next, self._watcher, wait_s)

    async def stop(self) -> None:
        with suppress(BusUnavailable):
            await self._bus.on_jetstream(_stop, self._watcher)


class _Shape(NamedTuple):
    """What the bucket is made with, by whichever process makes it first."""

    lease_s: float
    replicas: int


async def _bucket(js: JetStreamContext, shape: _Shape) -> KeyValue:
    try:
        return await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=BUCKET, history=1, ttl=shape.lease_s, storage=StorageType.FILE,
            replicas=shape.replicas))


async def _ttl(js: JetStreamContext, shape: _Shape) -> float:
    status = await (await _bucket(js, shape)).status()
    return status.ttl or shape.lease_s


async def _create(js: JetStreamContext, shape: _Shape, key: str, value: bytes) -> int:
    return await (await _bucket(js, shape)).create(key, value)


async def _get(js: JetStreamContext, shape: _Shape, key: str) -> bytes | None:
    try:
        entry = await (await _bucket(js, shape)).get(key)
    except nats.js.errors.KeyNotFoundError:  # never held, expired, or released (deleted)
        return None
    return bytes(entry.value) if entry.value else None


async def _update(js: JetStreamContext, shape: _Shape, key: str, value: bytes,
                  revision: int) -> int:
    return await (await _bucket(js, shape)).update(key, value, last=revision)


async def _delete(js: JetStreamContext, shape: _Shape, key: str, revision: int) -> None:
    await (await _bucket(js, shape)).delete(key, last=revision)


async def _watch(js: JetStreamContext, shape: _Shape) -> KeyValue.KeyWatcher:
    return await (await _bucket(js, shape)).watchall()


async def _next(js: JetStreamContext, watcher: KeyValue.KeyWatcher,
                wait_s: float) -> tuple[str, bytes | None] | None:
    # Not watcher.updates(timeout): asyncio.timeout() passes a cancellation on.
    try:
        async with asyncio.timeout(wait_s):
            while (entry := await anext(watcher)) is None:
                pass  # the end of what the bucket held when the watch began
    except (TimeoutError, StopAsyncIteration):
        return None
    held = entry.value and not entry.operation  # a delete or purge marker: released
    return entry.key, bytes(entry.value) if held else None


async def _stop(js: JetStreamContext, watcher: KeyValue.KeyWatcher) -> None:
    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
