"""Fault scenarios during play (issue 13's table: zone killed and stopped, api killed).

200 players (bench/world_swarm.py in its own process, tests/faults/play.py) play zone
z1 through an `outpost api` process while the zone runs in an `outpost zone z1`
process, as operators run them. The swarm's ledger holds every position a snapshot
acknowledged to each player, and every welcome; after each fault, Postgres is
compared with it.

Rules: the fault suite's durable services (tests/faults/conftest.py); an in-process
observer (no roles) reads Postgres; waits are bounded polls.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from server.config import Settings
from server.process import Roles, Running
from tests.faults.ledger import Figures, record
from tests.faults.play import Played, Position, playing, shown, stored, swarm
from tests.helpers import running_process, use_api_loop
from tests.processes import Outpost, process_env, started

PLAYERS = 200
ZONE = "z1"
CHECKPOINT_S = 1.0
SAVE_SLACK_S = 0.5  # a checkpoint's own batch, and the snapshot's way to the player


@asynccontextmanager
async def world(settings: Settings, nursery: trio.Nursery, tmp_path: Path
                ) -> AsyncIterator[tuple[Running, Outpost, dict[str, str]]]:
    """The observer, an api process, and the environment a zone process takes."""
    env = process_env(settings, WORLD_CHECKPOINT=str(CHECKPOINT_S), WORLD_ZONES=ZONE)
    async with (running_process(settings, nursery, Roles(http=False)) as observer,
                started(tmp_path, "api", env=env) as api):
        use_api_loop(observer)
        yield observer, api, env


def unlike_acked(ledger: dict[str, Played], saved: dict[str, Position],
                 before: float) -> list[str]:
    """The players whose stored position is not the last one acknowledged before
    `before`."""
    return [c for c, played in ledger.items()
            if (last := played.last_acked(before)) is None or shown(saved[c]) != last[2:]]


def welcomed_elsewhere(ledger: dict[str, Played], saved: dict[str, Position],
                       after: float) -> list[str]:
    """The players whose first welcome after `after` is not at their stored position."""
    return [c for c, played in ledger.items()
            if (welcome := played.welcome_after(after)) is None or welcome[2:] != saved[c]]


def staler_than(ledger: dict[str, Played], saved: dict[str, Position], at: float,
                limit_s: float) -> tuple[list[str], float]:
    """The players whose stored position had stopped being theirs more than `limit_s`
    before `at` (or never was), and the stalest position's age."""
    ages = {c: at - until if (until := played.current_until(saved[c])) is not None
            else float("inf") for c, played in ledger.items()}
    return [c for c, age in ages.items() if age > limit_s], max(0.0, *ages.values())


async def test_a_zone_stopped_then_killed_during_play(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with world(settings, nursery, tmp_path) as (observer, api, env), \
            AsyncExitStack() as stack:
        first = await stack.enter_async_context(started(tmp_path, "zone", ZONE, env=env))
        players = await stack.enter_async_context(swarm(tmp_path, api.url, PLAYERS))
        await playing(api.url, ZONE, PLAYERS)
        await trio.sleep(2)
        assert await first.stop(signal.SIGTERM) == 0
        saved_at_stop = await stored(observer)
        await trio.sleep(1)  # the players wait for their zone
        restarted = time.monotonic()
        second = await stack.enter_async_context(started(tmp_path, "zone", ZONE, env=env))
        back_in = await playing(api.url, ZONE, PLAYERS)
        await trio.sleep(3.6 * CHECKPOINT_S)  # late in a checkpoint's period
        second.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await second.process.wait()
        saved_at_kill = await stored(observer)
        ledger = await players.finished()
    assert len(ledger) == PLAYERS
    not_last = unlike_acked(ledger, saved_at_stop, restarted)
    not_welcomed = welcomed_elsewhere(ledger, saved_at_stop, restarted)
    stale, stalest = staler_than(ledger, saved_at_kill, killed, CHECKPOINT_S + SAVE_SLACK_S)
    closed = [c for c, played in ledger.items() if played.close is not None]
    still = [c for c, played in ledger.items()  # else the kill -9 check would be vacuous
             if len([a for a in played.acked if restarted < a[0] < killed]) < 10]
    record(Figures("zone stopped, then killed", f"{PLAYERS} players moving at 5 Hz",
                   f"SIGTERM z1, restarted; later kill -9 (checkpoint {CHECKPOINT_S:g} s)",
                   back_in, len(not_last) + len(not_welcomed) + len(stale), 0,
                   f"SIGTERM: {PLAYERS - len(not_last)} saved at the last acked, "
                   f"{PLAYERS - len(not_welcomed)} welcomed there; kill -9: stalest "
                   f"saved position {stalest:.2f} s old"))
    assert (not_last, not_welcomed, stale, closed, still) == ([], [], [], [], [])


async def test_an_api_killed_with_its_sessions(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with world(settings, nursery, tmp_path) as (observer, api, env), \
            started(tmp_path, "zone", ZONE, env=env):
        async with swarm(tmp_path, api.url, PLAYERS) as players:
            await playing(api.url, ZONE, PLAYERS)
            await trio.sleep(2)
            api.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await api.process.wait()
            ledger = await players.finished()
        async with started(tmp_path, "api", env=env) as second:
            await playing(second.url, ZONE, 0)  # the zone let them go
            gone_after = time.monotonic() - killed
            saved = await stored(observer)
            async with swarm(tmp_path, second.url, PLAYERS, users=players.users) as again:
                await playing(second.url, ZONE, PLAYERS)
                rejoined = await again.finished()
    at_last_ack = [c for c, p in ledger.items()
                   if (last := p.last_acked(killed)) is not None and shown(saved[c]) == last[2:]]
    # Else the zone applied moves whose snapshots died with the api: newer, not lost.
    newer = [c for c, p in ledger.items() if c not in at_last_ack
             and p.current_until(saved[c]) is None
             and (last := p.last_acked(killed)) is not None and p.sent > last[1]]
    older = [c for c in ledger if c not in at_last_ack and c not in newer]
    not_welcomed = welcomed_elsewhere(rejoined, saved, 0.0)
    reset = sum(p.close == "1006" for p in ledger.values())
    record(Figures("api killed", f"{PLAYERS} players moving at 5 Hz",
                   "kill -9 the api process; a new api, the players reconnect", gone_after,
                   len(older) + len(not_welcomed), 0,
                   f"saved at the last acked {len(at_last_ack)}, at a later move "
                   f"{len(newer)}; {PLAYERS - len(not_welcomed)} welcomed there; "
                   f"{reset} sockets reset"))
    assert (older, not_welcomed) == ([], [])
