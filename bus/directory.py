"""The zone directory: which process runs which zone, on a JetStream key-value bucket.

Each zone is a key whose value says who holds it (and its latest stats). The
bucket's TTL is the lease: a holder renews its key every third of it with a
compare-and-set on the revision it wrote last; a holder that dies stops
renewing and the key expires, so a standby's create (which succeeds only for an
absent key) takes the zone over. Renewing with the wrong revision means someone
else holds the zone now: the old holder must stop running it.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from bus.connection import Bus

BUCKET = "ZONES"


class ZoneDirectory:
    def __init__(self, bus: Bus, *, lease_s: float) -> None:
        self._bus = bus
        self.lease_s = lease_s

    async def claim(self, zone_id: str, value: dict[str, object]) -> int | None:
        """Take the zone if nobody holds it: the revision to renew against, else None."""
        try:
            return await self._bus.on_jetstream(_create, self.lease_s, zone_id,
                                                orjson.dumps(value))
        except nats.js.errors.KeyValueError:
            return None

    async def renew(self, zone_id: str, value: dict[str, object], revision: int) -> int | None:
        """Extend the lease: the new revision, or None if the zone is no longer ours."""
        try:
            return await self._bus.on_jetstream(_update, self.lease_s, zone_id,
                                                orjson.dumps(value), revision)
        except nats.js.errors.KeyValueError:
            return None

    async def release(self, zone_id: str, revision: int) -> None:
        """Give the zone up now (a graceful stop), so a standby need not wait the lease out."""
        with suppress(nats.js.errors.KeyValueError):  # not ours any more: nothing to do
            await self._bus.on_jetstream(_delete, self.lease_s, zone_id, revision)

    async def entries(self, zone_ids: Iterable[str]) -> dict[str, dict[str, object]]:
        """The current value of each zone that someone holds."""
        found = await self._bus.on_jetstream(_get_many, self.lease_s, list(zone_ids))
        return {zone_id: orjson.loads(raw) for zone_id, raw in found.items()}


async def _bucket(js: JetStreamContext, lease_s: float) -> KeyValue:
    # The first process to need the bucket creates it with its ZONE_LEASE as the TTL;
    # later ones use it as it is, so every process of a world must agree on ZONE_LEASE.
    try:
        return await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=BUCKET, history=1, ttl=lease_s, storage=StorageType.FILE))


async def _create(js: JetStreamContext, lease_s: float, key: str, value: bytes) -> int:
    return await (await _bucket(js, lease_s)).create(key, value)


async def _update(js: JetStreamContext, lease_s: float, key: str, value: bytes,
                  revision: int) -> int:
    return await (await _bucket(js, lease_s)).update(key, value, last=revision)


async def _delete(js: JetStreamContext, lease_s: float, key: str, revision: int) -> None:
    await (await _bucket(js, lease_s)).delete(key, last=revision)


async def _get_many(js: JetStreamContext, lease_s: float, keys: list[str]) -> dict[str, bytes]:
    bucket = await _bucket(js, lease_s)
    found = {}
    for key in keys:
        try:
            entry = await bucket.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue
        if entry.value:
            found[key] = bytes(entry.value)
    return found
