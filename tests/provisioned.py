"""What provisioning must have made of registered users, read from Postgres and JetStream
themselves: the tests of provisioning and the fault suite (tests/faults/) share it."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import orjson
import trio
import trio_asyncio
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerInfo

from bus.provisioning import SERVICES
from bus.subjects import USER_REGISTERED
from server.process import Roles, Running
from tests.helpers import eventually, register

PROVISIONER = Roles(http=False, provisioner=True)
FULL = {"players": 1, "characters": 1, "active": 1, "progressions": 1, "buildings": 2}


async def _counts(conn: asyncpg.Connection, user_ids: list[str]) -> dict[str, dict[str, int]]:
    rows = await conn.fetch("""
        SELECT u.id,
          (SELECT count(*) FROM players.players p WHERE p.user_id = u.id) AS players,
          (SELECT count(*) FROM characters.characters c WHERE c.user_id = u.id) AS characters,
          (SELECT count(*) FROM characters.characters c WHERE c.user_id = u.id AND c.active)
            AS active,
          (SELECT count(*) FROM progression.progressions g WHERE g.user_id = u.id)
            AS progressions,
          (SELECT count(*) FROM buildings.buildings b WHERE b.user_id = u.id) AS buildings
        FROM unnest($1::uuid[]) AS u(id)""", [uuid.UUID(u) for u in user_ids])
    return {str(r["id"]): {k: r[k] for k in FULL} for r in rows}


async def counts(running: Running, user_ids: list[str]) -> dict[str, dict[str, int]]:
    return await running.services.pg.transact(_counts, user_ids)


async def all_provisioned(running: Running, user_ids: list[str]) -> bool:
    return all(c == FULL for c in (await counts(running, user_ids)).values())


async def _consumers(nc: NatsClient) -> list[ConsumerInfo]:
    js = nc.jetstream()
    return [await js.consumer_info("USERS", durable) for durable in SERVICES]


async def consumers(running: Running) -> list[ConsumerInfo]:
    """What JetStream says of the four provisioning consumers now."""
    infos: list[ConsumerInfo] = await trio_asyncio.aio_as_trio(_consumers)(
        running.services.bus._nc)
    return infos


async def drained(running: Running) -> bool:
    return not any(info.num_pending or info.num_ack_pending
                   for info in await consumers(running))


async def held(running: Running) -> int:
    """Messages the provisioning consumers have delivered and not had settled (acked,
    terminated or handed back): those a provisioner killed now gets again (AckWait)."""
    return sum(info.num_ack_pending or 0 for info in await consumers(running))


async def publish(running: Running, payload: bytes, msg_id: str) -> None:
    """A `user.registered` published by hand into the USERS stream."""
    async def send(nc: NatsClient) -> None:
        await nc.jetstream().publish(USER_REGISTERED, payload, headers={"Nats-Msg-Id": msg_id})

    await trio_asyncio.aio_as_trio(send)(running.services.bus._nc)


def user_registered(user_id: str, username: str | None = None) -> bytes:
    username = username or f"u_{user_id[:8]}"
    return orjson.dumps({"userId": user_id, "username": username,
                         "email": f"{username}@example.com",
                         "registrationTimestamp": "2026-01-01T00:00:00Z"})


async def provisioned_exactly_once(running: Running, user_ids: list[str]) -> None:
    """Every user complete, and still complete (nothing doubled) once the consumers drain."""
    await eventually(lambda: all_provisioned(running, user_ids), "every user provisioned",
                     tries=300)
    await eventually(lambda: drained(running), "the consumers to drain", tries=300)
    assert await counts(running, user_ids) == dict.fromkeys(user_ids, FULL)


async def registered_users(client: httpx.AsyncClient, n: int,
                           into: list[str] | None = None) -> list[str]:
    """Register `n` users, ten at a time; their ids, also appended to `into` as they come."""
    user_ids = [] if into is None else into

    async def one(limit: trio.CapacityLimiter) -> None:
        async with limit:
            user_ids.append((await register(client))["user_id"])

    limit = trio.CapacityLimiter(10)
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one, limit)
    return user_ids
