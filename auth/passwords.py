"""Argon2id password hashing, off the event loop.

Hashing costs tens of milliseconds of CPU by design; it runs in worker threads of its
own (argon2-cffi releases the GIL) behind a capacity limiter, so a login flood queues
in the limiter instead of stalling every other request. Those threads run at the lowest
CPU priority: where the process has fewer cores than busy threads (one core, often, in
a container), the event loop's thread, which serves every other request and socket,
takes the CPU first and a registration storm waits instead of the game
(docs/operations.md, "Password hashing").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import TypeVar

import trio
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")
LOWEST_PRIORITY = 19  # nice(1)'s: a thread of it gets the CPU when no other wants it


class Passwords:
    def __init__(self, *, time_cost: int, memory_kib: int, threads: int | None = None) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                      parallelism=1, type=Type.ID)
        workers = threads or os.cpu_count() or 2
        self._limiter = trio.CapacityLimiter(workers)
        # Threads of their own, not trio's cache: a thread's priority cannot be raised
        # again without privileges, and trio's threads serve other work too.
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="argon2",
                                        initializer=_lowest_priority)
        # Verified against when the user does not exist, so an unknown username
        # costs the same time as a wrong password and answers the same.
        self._dummy_hash = self._hasher.hash("not a real password")

    async def hash(self, password: str) -> str:
        return await self._in_pool(self._hasher.hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether `stored_hash` was made with other parameters than this hasher's (a
        lower cost, say): cheap, it only reads the hash's header."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return False  # not a hash a login could have verified

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await self._in_pool(self._verify, stored_hash, password)

    async def _in_pool(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` in a hashing thread; the caller waits without holding the loop.
        Cancelled, it stops waiting (the hash in progress finishes unseen)."""
        async with self._limiter:
            token = trio.lowlevel.current_trio_token()
            done = trio.Event()

            def wake(_: object) -> None:
                with suppress(trio.RunFinishedError):
                    token.run_sync_soon(done.set)

            future = self._pool.submit(work, *args)
            future.add_done_callback(wake)
            await done.wait()
            return future.result()

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(stored_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored_hash is not None


def _lowest_priority() -> None:
    """Lower this thread's CPU priority (Linux: a thread's own nice value); where the
    system will not, the thread runs as before."""
    with suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
