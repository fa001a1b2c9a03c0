"""The zone directory's lease (bus/directory.py): the bucket's TTL, set by the process
that made the bucket, is every process's lease; a process configured otherwise names
both values loudly when it opens the directory, and then uses the bucket's.

Rules: the session's real NATS with JetStream, through an api process's own bus.
"""

from __future__ import annotations

import logging

import pytest
import trio

from bus.directory import ZoneDirectory
from server.process import Running
from tests.helpers import use_api_loop


async def test_a_lease_other_than_the_buckets_is_named_and_the_buckets_is_used(
    api: Running, caplog: pytest.LogCaptureFixture
) -> None:
    use_api_loop(api)
    bus = api.services.bus
    with trio.fail_after(10):
        await bus.connected_once.wait()
    caplog.set_level(logging.INFO, logger="bus.directory")
    agreeing = ZoneDirectory(bus, lease_s=3.0)
    await agreeing.open()  # makes the bucket if this is the first use
    ttl = agreeing.lease_s
    assert ttl > 0
    again = ZoneDirectory(bus, lease_s=ttl)
    await again.open()
    assert again.lease_s == ttl
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "nothing to say"

    other = ZoneDirectory(bus, lease_s=ttl + 4)
    await other.open()
    assert other.lease_s == ttl, "a holder renews by the bucket's TTL, not its own"
    [said] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = said.getMessage()
    assert f"ZONE_LEASE is {ttl + 4:g} s" in message, message
    assert f"keeps keys for {ttl:g} s" in message, message
