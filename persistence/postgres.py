"""The Postgres actor: an asyncpg pool behind the trio/asyncio bridge.

Store functions (in this package) are asyncio coroutines that take a
connection; `Postgres.transact` executes one inside a transaction on the asyncio
side, so a whole unit of work crosses the bridge once and no asyncio object
reaches Trio code. Losing the server maps to `Unavailable` (HTTP 503): the
transaction was rolled back, so the request changed nothing.

The unit's deadline (DB_TIMEOUT_MS) covers waiting for a connection and the work,
not the COMMIT: a COMMIT cut short by a deadline may still have been applied, and
the client would be told "nothing changed" about a change that was made (a retry
then makes a second character). Once sent, a COMMIT is waited for, up to
COMMIT_TIMEOUT_S; only a server that stops answering for that long leaves its
outcome unknown, and the 503 then says so.

After the server restarts, every pooled connection is dead, and asyncpg learns it
only when it uses one. A unit of work whose connection fails before its
transaction has begun (nothing was sent that could change anything) is retried
once on a fresh connection, so the first request after a restart succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Concatenate, ParamSpec, TypeVar

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from persistence.errors import Refused, Unavailable, refusal_of_tls

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Work = Callable[Concatenate[asyncpg.Connection, P], Awaitable[T]]

# Errors that mean "the server is gone or refusing", not "your query is wrong".
_OUTAGE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a pooled connection the server closed while it idled
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    OSError,
    TimeoutError,
)
COMMIT_TIMEOUT_S = 10.0


class _Unconfirmed(Exception):
    """A COMMIT was sent and never answered: it may or may not have been applied."""


class Postgres:
    def __init__(self, url: str, *, timeout_s: float, max_size: int = 10) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def max_size(self) -> int:
        """Connections the pool opens at most: units of work at once."""
        return self._max_size

    async def run(
        self, *, task_status: trio.TaskStatus[Postgres] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the pool, report ready, and close it on cancellation. Refused if the
        server turns the credentials or TLS of the URL away."""
        try:
            self._pool = await aio_as_trio(asyncpg.create_pool)(
                self._url, min_size=1, max_size=self._max_size,
                timeout=self._timeout_s, command_timeout=self._timeout_s,
            )
        except asyncpg.InvalidAuthorizationSpecificationError as exc:
            # A wrong password, or no pg_hba.conf line lets this user in from here
            # (28P01 and 28000): asyncpg's message says which, never the password.
            raise Refused("postgres", "credentials", str(exc)) from None
        except (OSError, asyncpg.PostgresError) as exc:
            refusal = refusal_of_tls(exc)
            if refusal is None:
                raise
            raise Refused("postgres", refusal, str(exc)) from None
        try:
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await aio_as_trio(self._pool.close)()

    async def transact(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `work(conn, *args)` in one transaction; one bridge crossing."""
        try:
            result: T = await aio_as_trio(self._in_transaction)(work, *args, **kwargs)
            return result
        except _Unconfirmed as exc:
            log.warning("postgres did not confirm a commit: %r", exc.__cause__)
            raise Unavailable("the database did not confirm the change; it may have been "
                              "saved") from exc
        except _OUTAGE as exc:
            log.warning("postgres unavailable: %r", exc)
            raise Unavailable("the database is unavailable; nothing was changed") from exc

    async def _in_transaction(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        pool = self._pool
        assert pool is not None, "Postgres actor not started"
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        for retries_left in (1, 0):
            begun = False
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await pool.acquire()
                try:
                    transaction = conn.transaction()
                    try:
                        async with asyncio.timeout_at(deadline):
                            await transaction.start()
                            begun = True
                            result = await work(conn, *args, **kwargs)
                    except Exception as exc:
                        if begun and not isinstance(exc, _OUTAGE):
                            await self._roll_back(transaction)
                        raise
                    try:
                        async with asyncio.timeout(COMMIT_TIMEOUT_S):
                            await transaction.commit()
                    except _OUTAGE as exc:
                        raise _Unconfirmed from exc
                    return result
                finally:
                    # Releasing rolls back what was not committed; a connection that
                    # cannot be reset in time is closed, and its error is not the caller's.
                    with suppress(*_OUTAGE):
                        await pool.release(conn, timeout=self._timeout_s)
            except _OUTAGE:
                # After a server restart every pooled connection is dead: drop them
                # all now, so that the next use reconnects instead of failing too.
                # (A coroutine in asyncpg: without the await nothing is expired.)
                await pool.expire_connections()
                if begun or not retries_left:
                    raise
                log.info("postgres: a pooled connection was dead; trying a fresh one")
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _roll_back(self, transaction: asyncpg.transaction.Transaction) -> None:
        """Roll back after the work raised (a unique violation: a 409, say). Released with
        its transaction open, the connection is rolled back by asyncpg's reset, which
        reports that to asyncio's exception handler as an error: a WARNING for every
        ordinary refusal. After an outage or a deadline the connection may be busy or
        gone: then release resets or closes it, and the outage is logged anyway."""
        with suppress(*_OUTAGE):
            async with asyncio.timeout(self._timeout_s):
                await transaction.rollback()

    async def ping(self) -> bool:
        try:
            with trio.move_on_after(self._timeout_s):
                return await self.transact(_select_one) == 1
        except Unavailable:
            pass
        return False


async def _select_one(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT 1"))
