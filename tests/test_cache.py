"""The Redis cache-aside character list (docs/protocol.md, "Characters", and persistence/cache.py).

Covers: a second list served from Redis without touching Postgres; invalidation on
create; the slow-reader race (a fill that straddles a write is refused), both on the
Cache actor and through the service; a key whose invalidation Redis has not confirmed
is never served from Redis; and Redis stopped or hung under a running server.

Rules: real Redis and Postgres only (no mocks); a test may wrap `pg.transact` of its own
api instance to count or hold reads, and reads Redis directly through the api's own
client. Nothing waits by sleeping: asynchronous outcomes are polled in bounded loops
that fail with a message. Fault tests restore the shared servers in `finally`.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_asyncio

from characters.store import cache_key, list_characters
from persistence.cache import CacheMiss
from server.devstack import DevStack
from server.process import Running
from tests.helpers import bearer, eventually, register, use_api_loop


async def redis(api: Running, command: str, *args: object) -> Any:
    """One raw command on the api's own Redis client (for checks the Cache does not offer)."""
    return await trio_asyncio.aio_as_trio(getattr(api.services.cache._redis, command))(*args)


async def create(client: httpx.AsyncClient, token: str, name: str) -> dict[str, Any]:
    response = await client.post("/v1/characters", json={"name": name}, headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


async def listed(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/characters", headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()["characters"]


def names(characters: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in characters]


async def cache_serves(api: Running, client: httpx.AsyncClient, token: str, key: str,
                       expected: list[str]) -> bool:
    """One step of a recovery poll: the list answered must be current at every step
    (never a list older than a write); True once Redis holds the current list and reads
    use Redis again (no longer skipped after a failure), so the next list comes from it."""
    assert names(await listed(client, token)) == expected
    cached = await redis(api, "get", key)
    return (cached is not None and names(orjson.loads(cached)) == expected
            and trio.current_time() >= api.services.cache._skip_until)


async def test_second_list_is_served_from_redis(
    api: Running, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_api_loop(api)
    user = await register(client)
    key = cache_key(uuid.UUID(user["user_id"]))
    created = await create(client, user["token"], "Cached One")

    reads: list[object] = []
    original = api.services.pg.transact

    async def counting(work: Any, *args: Any, **kwargs: Any) -> Any:
        if work is list_characters:
            reads.append(args)
        return await original(work, *args, **kwargs)

    monkeypatch.setattr(api.services.pg, "transact", counting)

    first = await listed(client, user["token"])
    assert first == [created]
    assert len(reads) == 1, "the first list reads Postgres"
    assert await redis(api, "exists", key) == 1

    # Change the row behind the cache's back: the cached list must still be served.
    async def rename(conn: Any) -> None:
        await conn.execute("UPDATE characters.characters SET name = 'Renamed' WHERE id = $1",
                           uuid.UUID(created["id"]))

    await original(rename)
    second = await listed(client, user["token"])
    assert second == first
    assert len(reads) == 1, "the second list must not query Postgres"

    # The next write invalidates, and the list shows Postgres' current state.
    await create(client, user["token"], "Cached Two")
    assert names(await listed(client, user["token"])) == ["Renamed", "Cached Two"]
    assert len(reads) == 2


async def test_create_invalidates_and_next_list_has_it(
    api: Running, client: httpx.AsyncClient
) -> None:
    use_api_loop(api)
    user = await register(client)
    key = cache_key(uuid.UUID(user["user_id"]))
    assert await listed(client, user["token"]) == []
    assert await redis(api, "exists", key) == 1, "an empty list is cached too"

    expected: list[str] = []
    for i in range(4):
        created = await create(client, user["token"], f"Hero {i}")
        expected.append(created["id"])
        assert await redis(api, "exists", key) == 0, "a create must drop the cached list"
        assert [c["id"] for c in await listed(client, user["token"])] == expected
        assert await redis(api, "exists", key) == 1
        # And again from the cache: same answer.
        assert [c["id"] for c in await listed(client, user["token"])] == expected


async def test_fill_after_invalidate_is_refused(api: Running) -> None:
    use_api_loop(api)
    cache = api.services.cache
    key = f"test:race:{uuid.uuid4()}"
    try:
        miss = await cache.get(key)  # a slow reader misses...
        assert isinstance(miss, CacheMiss)
        assert miss.generation is not None
        await cache.invalidate(key)  # ...a writer commits and invalidates...
        assert key not in cache._unconfirmed
        # ...and the reader's stale fill must not land.
        assert await cache.fill(key, b"stale", miss, 60) is False
        assert await redis(api, "get", key) is None

        fresh = await cache.get(key)
        assert isinstance(fresh, CacheMiss)
        assert fresh.generation != miss.generation
        assert await cache.fill(key, b"fresh", fresh, 60) is True
        assert await cache.get(key) == b"fresh"
    finally:
        await redis(api, "delete", key, f"{key}:gen")


async def test_slow_reader_cannot_cache_a_list_older_than_a_write(
    api: Running, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_api_loop(api)
    user = await register(client)
    key = cache_key(uuid.UUID(user["user_id"]))
    first = await create(client, user["token"], "Early Bird")

    original = api.services.pg.transact
    read_done, release = trio.Event(), trio.Event()

    async def held(work: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(work, *args, **kwargs)
        if work is list_characters and not release.is_set():
            read_done.set()  # the old rows are read; hold them back
            await release.wait()
        return result

    monkeypatch.setattr(api.services.pg, "transact", held)
    slow: list[list[dict[str, Any]]] = []

    async def slow_list() -> None:
        slow.append(await listed(client, user["token"]))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_list)
            await read_done.wait()
            second = await create(client, user["token"], "Late Comer")
            release.set()

    assert slow == [[first]], "the held read began before the write"
    assert await redis(api, "exists", key) == 0, "the straddling fill must have been refused"
    assert [c["id"] for c in await listed(client, user["token"])] == [first["id"], second["id"]]


async def test_unconfirmed_invalidation_is_never_served(stack: DevStack, api: Running) -> None:
    """A hung Redis keeps the old value of a key whose invalidation timed out; until the
    background retry confirms, this process must not serve that key from Redis, however
    late the retry runs."""
    use_api_loop(api)
    cache = api.services.cache
    key = f"test:unconfirmed:{uuid.uuid4()}"
    miss = await cache.get(key)
    assert isinstance(miss, CacheMiss)
    assert await cache.fill(key, b"old", miss, 60)
    stack.redis.pause()
    try:
        with trio.fail_after(5):
            assert isinstance(await cache.get(key), CacheMiss)  # times out: a miss
            await cache.invalidate(key)  # times out too
        assert key in cache._unconfirmed
    finally:
        stack.redis.resume()
    try:
        cache._skip_until = 0.0  # as if the read backoff ran out before the retry ran
        assert isinstance(await cache.get(key), CacheMiss), "served a value a write replaced"

        async def confirmed() -> bool:
            return key not in cache._unconfirmed

        await eventually(confirmed, "the timed-out invalidation to be retried")
        assert await redis(api, "get", key) is None
        fresh = await cache.get(key)
        assert isinstance(fresh, CacheMiss)
        assert await cache.fill(key, b"new", fresh, 60)
        assert await cache.get(key) == b"new"
    finally:
        await redis(api, "delete", key, f"{key}:gen")


async def user_with_cached_list(api: Running, client: httpx.AsyncClient) -> tuple[str, str]:
    """A new user whose list ["Before"] is cached in Redis; returns its token and key."""
    user = await register(client)
    key = cache_key(uuid.UUID(user["user_id"]))
    await create(client, user["token"], "Before")
    assert names(await listed(client, user["token"])) == ["Before"]
    assert await redis(api, "exists", key) == 1
    return user["token"], key


async def test_redis_stopped(
    stack: DevStack, api: Running, client: httpx.AsyncClient
) -> None:
    use_api_loop(api)
    cache = api.services.cache
    token, key = await user_with_cached_list(api, client)

    stack.redis.stop()
    try:
        with trio.fail_after(5):
            assert names(await listed(client, token)) == ["Before"]
            await create(client, token, "During")
            assert key in cache._unconfirmed, "the failed invalidation is remembered"
            assert names(await listed(client, token)) == ["Before", "During"]
    finally:
        stack.redis.start()

    # The restarted Redis is empty; the background retry re-applies the invalidation.
    async def retried() -> bool:
        return key not in cache._unconfirmed

    await eventually(retried, "the failed invalidation to be retried")
    assert await redis(api, "get", f"{key}:gen") == b"1"

    await eventually(lambda: cache_serves(api, client, token, key, ["Before", "During"]),
                     "the current list to be cached again")
    assert names(await listed(client, token)) == ["Before", "During"]  # now from Redis


async def test_redis_hung(stack: DevStack, api: Running, client: httpx.AsyncClient) -> None:
    use_api_loop(api)
    cache = api.services.cache
    token, key = await user_with_cached_list(api, client)

    stack.redis.pause()
    try:
        with trio.fail_after(5):
            assert names(await listed(client, token)) == ["Before"]
        with trio.fail_after(5):
            await create(client, token, "During")
        with trio.fail_after(5):
            assert names(await listed(client, token)) == ["Before", "During"]
    finally:
        stack.redis.resume()

    await eventually(lambda: cache_serves(api, client, token, key, ["Before", "During"]),
                     "Redis to hold the current list again")
    assert key not in cache._unconfirmed
    assert names(await listed(client, token)) == ["Before", "During"]  # now from Redis
    assert await cache.ping()
