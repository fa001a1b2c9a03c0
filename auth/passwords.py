"""Argon2id password hashing, off the event loop.

Hashing costs tens of milliseconds of CPU by design; it runs in worker threads
(argon2-cffi releases the GIL) behind a capacity limiter, so a login flood
queues in the limiter instead of stalling every other request.
"""

from __future__ import annotations

import os

import trio
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    def __init__(self, *, time_cost: int, memory_kib: int, threads: int | None = None) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                      parallelism=1, type=Type.ID)
        self._limiter = trio.CapacityLimiter(threads or os.cpu_count() or 2)
        # Verified against when the user does not exist, so an unknown username
        # costs the same time as a wrong password and answers the same.
        self._dummy_hash = self._hasher.hash("not a real password")

    async def hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether `stored_hash` was made with other parameters than this hasher's (a
        lower cost, say): cheap, it only reads the hash's header."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return False  # not a hash a login could have verified

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        return await trio.to_thread.run_sync(
            self._verify, stored_hash, password, limiter=self._limiter
        )

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(stored_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored_hash is not None
