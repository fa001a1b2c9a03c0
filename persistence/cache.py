"""The Redis cache actor: cache-aside reads that can never outlive a write.

The race it closes: a slow reader loads a list from Postgres, a writer commits
and deletes the key, then the reader stores its now-stale list. Each key has a
generation counter `<key>:gen`; a writer bumps it when it invalidates, and a
reader's fill is a compare-and-set against the generation it saw *before*
reading Postgres, so a fill that straddles a write is refused.

Redis is only a cache: every call runs under a short timeout, and a failure is
a miss (reads) or a dropped fill. A command on a pooled connection that Redis
closed (it restarted) is retried once on a fresh connection, so a restart costs
no request a miss. An invalidation that fails is retried in the
background until Redis answers, so a recovered Redis does not serve a list
older than a write it missed.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import trio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from trio_asyncio import aio_as_trio

from persistence.errors import Refused, refusal_of_tls

log = logging.getLogger(__name__)

# Set only if the generation is still the one the reader saw (missing == "0").
_FILL = """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# For each (key, key:gen) pair: bump the generation (kept longer than any fill can
# take) and drop the value.
_INVALIDATE = """
for i = 1, #KEYS, 2 do
  redis.call('INCR', KEYS[i + 1])
  redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
  redis.call('DEL', KEYS[i])
end
return 1
"""

_GEN_TTL_S = 3600
_RETRY_EVERY_S = 0.5
# After a failure, reads skip Redis for this long instead of each paying the timeout.
_BACKOFF_S = 1.0


class CacheMiss:
    """A miss, carrying the generation a later `fill` must still match."""

    __slots__ = ("generation",)

    def __init__(self, generation: str | None) -> None:
        self.generation = generation  # None: Redis did not answer; do not fill


class Cache:
    def __init__(self, url: str, *, timeout_s: float, ca_file: str = "") -> None:
        self._url = url
        self._ca_file = ca_file  # for rediss://: the CA that signed the server's certificate
        self._timeout_s = timeout_s
        self._redis: aioredis.Redis | None = None
        self._skip_until = 0.0
        self._unconfirmed: set[str] = set()  # keys whose invalidation Redis has not confirmed
        self._retry_now = trio.Event()
        # Reads since the start (GET /metrics): a value, a miss, no answer from Redis.
        self.hits = self.misses = self.errors = 0

    async def run(self, *, task_status: trio.TaskStatus[Cache] = trio.TASK_STATUS_IGNORED) -> None:
        # Only for rediss://: a redis:// connection takes no ssl_* argument at all.
        tls: dict[str, Any] = {"ssl_ca_certs": self._ca_file} if self._ca_file else {}
        self._redis = aioredis.Redis.from_url(
            self._url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(aioredis.ConnectionError,)),
            **tls,
        )
        try:
            await self._first_ping()
            task_status.started(self)
            while True:
                await self._retry_now.wait()
                await trio.sleep(_RETRY_EVERY_S)
                self._retry_now = trio.Event()
                if self._unconfirmed:
                    await self.invalidate(*self._unconfirmed)
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                await aio_as_trio(self._redis.aclose)()

    async def _first_ping(self) -> None:
        """Refused if Redis turns the URL's credentials or TLS away. A Redis that does not
        answer is only a cache down: the process starts, and reads go to Postgres."""
        assert self._redis is not None
        with trio.move_on_after(self._timeout_s):
            try:
                await aio_as_trio(self._redis.ping)()
            except redis.exceptions.AuthenticationError as exc:  # WRONGPASS, NOAUTH
                raise Refused("redis", "credentials", str(exc)) from None
            except (aioredis.RedisError, OSError) as exc:
                refusal = refusal_of_tls(exc)
                if refusal is not None:
                    raise Refused("redis", refusal, str(exc)) from None
                log.warning("redis not reachable at start: %r", exc)

    async def _call(self, fn_name: str, *args: object) -> object | None:
        """Run one Redis command; None when Redis fails or is slower than the timeout."""
        assert self._redis is not None, "Cache actor not started"
        fn = getattr(self._redis, fn_name)
        with trio.move_on_after(self._timeout_s):
            try:
                result: object = await aio_as_trio(fn)(*args)
                return result
            except (aioredis.RedisError, OSError) as exc:
                log.warning("redis %s failed: %r", fn_name, exc)
        self._skip_until = trio.current_time() + _BACKOFF_S
        return None

    async def get(self, key: str) -> bytes | CacheMiss:
        """The cached value, or a miss carrying the generation to fill against."""
        if trio.current_time() < self._skip_until or key in self._unconfirmed:
            # Failing Redis, or one that may still hold a value older than a write it
            # missed: read past it (no fill) until the retried invalidation lands, rather
            # than trust the backoff to outlast the retry.
            self.errors += 1
            return CacheMiss(None)
        found = await self._call("mget", key, f"{key}:gen")
        if not isinstance(found, list):  # Redis did not answer
            self.errors += 1
            return CacheMiss(None)
        value, generation = found
        if value is not None:
            self.hits += 1
            return bytes(value)
        self.misses += 1
        return CacheMiss(generation.decode() if generation else "0")

    async def fill(self, key: str, value: bytes, miss: CacheMiss, ttl_s: int) -> bool:
        """Store `value` unless the key was invalidated since `miss` was read."""
        if miss.generation is None:
            return False
        stored = await self._call("eval", _FILL, 2, key, f"{key}:gen", miss.generation,
                                  value, ttl_s)
        return stored == 1

    async def invalidate(self, *keys: str) -> None:
        """Drop `keys` and bump their generations (one call); retried in the background
        until Redis confirms."""
        pairs = [name for key in keys for name in (key, f"{key}:gen")]
        done = await self._call("eval", _INVALIDATE, len(pairs), *pairs, _GEN_TTL_S)
        if done == 1:
            self._unconfirmed.difference_update(keys)
        else:
            self._unconfirmed.update(keys)
            self._retry_now.set()

    async def ping(self) -> bool:
        return await self._call("ping") is True
