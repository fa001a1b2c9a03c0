"""auth/passwords.py: Argon2id in threads of its own, at the lowest CPU priority, so that
a registration storm waits for the event loop and not the other way round
(docs/operations.md, "Password hashing"; measured by bench/register_storm.py's
/healthz probe, never timed here).

Rules: real hashing, at a cheap cost; the thread's priority read from the system.
"""

from __future__ import annotations

import os
import threading

import trio

from auth.passwords import LOWEST_PRIORITY, Passwords


def cheap() -> Passwords:
    return Passwords(time_cost=1, memory_kib=1024, threads=2)


async def test_hashes_verify_and_run_at_the_lowest_priority() -> None:
    passwords = cheap()
    hashed = await passwords.hash("correct horse")
    assert await passwords.verify(hashed, "correct horse")
    assert not await passwords.verify(hashed, "wrong horse")
    assert not await passwords.verify(None, "correct horse"), "an unknown user never verifies"
    assert not await passwords.verify("not a hash", "correct horse")
    niceness = await passwords._in_pool(
        lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert niceness == LOWEST_PRIORITY
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0, \
        "the loop's own thread keeps its priority"


async def test_a_cancelled_wait_leaves_the_hasher_usable() -> None:
    passwords = cheap()
    with trio.move_on_after(0):
        await passwords.hash("never awaited")
    assert await passwords.verify(await passwords.hash("x" * 12), "x" * 12)
