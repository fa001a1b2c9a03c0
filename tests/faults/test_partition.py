"""Fault scenario: a zone process on a host of its own, cut off from NATS (and everything
else) by a partition longer than its lease, while a standby for the zone waits on this
host (issue 13's table: partition).

What must hold: the standby takes the zone over; the cut-off process has stopped
ticking before its lease could end, so the zone never has two owners; the players,
connected to an api on this host, keep their sessions and are welcomed by the standby
at positions no older than a checkpoint; once the partition heals, the old process
stands by and the standby keeps the zone.

Rules: the fault suite's services (tests/faults/conftest.py); the cut-off host is a
network namespace that reaches them through relays (tests/faults/netns.py); which
process ran the zone when is read from the processes' own log lines, which carry the
machine's clock.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import trio

from server.config import Settings
from tests.faults.ledger import Figures, record
from tests.faults.netns import NetHost, net_host, relayed
from tests.faults.play import (
    CHECKPOINT_S,
    PLAYERS,
    SAVE_SLACK_S,
    ZONE,
    listed,
    staler_than,
    swarm,
    world,
)
from tests.helpers import eventually
from tests.processes import logged, started

PARTITION_S = 8.0  # longer than the lease (3 s), with time for the standby to take over
STOPPED = ("stopping before it can run out",  # it could not renew: fenced itself
           "lease lost to another process")  # it learnt, once healed, that it was not its
RUNNING = f"zone {ZONE}: running it"
STANDING_BY = f"zone {ZONE}: standing by"


def _held(url: str, *, not_by: object = None, players: int | None = None
          ) -> Callable[[], Awaitable[str | None]]:
    """A check: the holder of ZONE, if one holds it (not `not_by`, with `players`)."""
    async def check() -> str | None:
        zone = await listed(url, ZONE)
        owner = zone.get("owner")
        if owner in (None, not_by) or players not in (None, zone["players"]):
            return None
        return str(owner)
    return check


def _free(url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return "owner" not in await listed(url, ZONE)
    return check


async def _relayed_settings(settings: Settings, host: NetHost,
                            nursery: trio.Nursery) -> dict[str, str]:
    """The service URLs as a process on `host` reaches them."""
    return {name: await relayed(url, host, nursery) for name, url in (
        ("DATABASE_URL", settings.database_url), ("REDIS_URL", settings.redis_url),
        ("NATS_URL", settings.nats_url))}


async def test_a_zone_partitioned_from_nats_is_taken_over_without_two_owners(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with net_host() as host, trio.open_nursery() as relays:
        async with world(settings, nursery, tmp_path) as (_, api, env), \
                AsyncExitStack() as stack:
            await eventually(_free(api.url), f"{ZONE} free of an earlier test's holder",
                             tries=100)
            far_env = {**env, **await _relayed_settings(settings, host, relays)}
            far = await stack.enter_async_context(
                started(tmp_path, "zone", ZONE, env=far_env, prefix=host.run))
            first = await eventually(_held(api.url), f"{ZONE} held on the far host", tries=200)
            near = await stack.enter_async_context(started(tmp_path, "zone", ZONE, env=env))
            players = await stack.enter_async_context(swarm(tmp_path, api.url, PLAYERS))
            await players.ready(ZONE)
            await trio.sleep(2)

            await host.cut()
            cut_at, cut_wall = time.monotonic(), datetime.now().astimezone()
            taken_by = await eventually(_held(api.url, not_by=str(first), players=PLAYERS),
                                        "the standby to hold the zone with every player",
                                        tries=200)
            recovered_s = time.monotonic() - cut_at
            await trio.sleep(max(0.0, PARTITION_S - recovered_s))
            await host.heal()
            healed_wall = datetime.now().astimezone()

            async def standing_by() -> bool:
                return any(t > healed_wall for t in logged(far.log, STANDING_BY))

            await eventually(standing_by, "the far process to stand by once healed", tries=200)
            await trio.sleep(2)  # play on: the zone stays with the standby
            kept = (await listed(api.url, ZONE)).get("owner")
            ledger = await players.finished()
        relays.cancel_scope.cancel()

    stopped = sorted(t for message in STOPPED for t in logged(far.log, message)
                     if t > cut_wall)
    took_over = [t for t in logged(near.log, RUNNING) if t > cut_wall]
    assert stopped and took_over, (stopped, took_over)
    margin_s = (took_over[0] - stopped[0]).total_seconds()
    welcomed = {c: w[2:] for c, played in ledger.items()
                if (w := played.welcome_after(cut_at)) is not None}
    unwelcomed = [c for c in ledger if c not in welcomed]
    stale, stalest = staler_than({c: ledger[c] for c in welcomed}, welcomed, cut_at,
                                 CHECKPOINT_S + SAVE_SLACK_S)
    closed = [c for c, played in ledger.items() if played.close is not None]
    record(Figures(
        "partition", f"{PLAYERS} players moving at 5 Hz; a standby zone on this host",
        f"the zone's host cut off for {PARTITION_S:g} s (veth down; relays add 10 ms "
        "each way)", recovered_s, len(unwelcomed) + len(stale) + len(closed),
        int(margin_s <= 0),
        f"old owner stopped {(stopped[0] - cut_wall).total_seconds():.1f} s after the cut, "
        f"the standby ran the zone {margin_s:+.1f} s after that; old one stood by once healed; "
        f"{len(welcomed)} welcomed again, stalest at {stalest:.2f} s"))
    assert margin_s > 0, "two processes ran the zone at once"
    assert kept == taken_by, "the zone went back to the process that was cut off"
    assert (unwelcomed, stale, closed) == ([], [], [])
