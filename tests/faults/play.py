"""Players for the fault suite's play scenarios: `bench/world_swarm.py` in a process of
its own (so that the load does not compete with the test's event loop), with a ledger
of what the server acknowledged to each player, and the audits of positions against
Postgres.

Positions: a v2 snapshot shows float32 (docs/protocol.md, "World, protocol v2"), Postgres
keeps the zone's exact numbers, so a stored position equals an acknowledged one when
its float32 is the one shown.
"""

from __future__ import annotations

import math
import signal
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import trio

from server.config import Settings
from server.process import Roles, Running
from tests.helpers import eventually, running_process, use_api_loop
from tests.processes import Outpost, process_env, started

MOVE_HZ = 5.0
PLAYERS = 200
ZONE = "z1"
CHECKPOINT_S = 1.0
SAVE_SLACK_S = 0.5  # a checkpoint's own batch, and the snapshot's way to the player
SLOW_CLOSE_S = 3.0
# The others undisturbed: every one got every snapshot of a 20 Hz zone, and the input
# latency stayed that of a zone whose fan-out never stalled (a stall takes seconds).
RATE_FLOOR = 19.0
P99_CEILING_MS = 250.0
JOIN_TRIES = 900  # polls of 0.1 s: 200 registrations and joins on a busy 2-core machine
Position = tuple[float, float]


def float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


@dataclass
class Played:
    """One player's side of the ledger (bench/world_swarm.py, `ledger`)."""

    character_id: str
    sent: int  # the last move seq it sent
    acked: list[tuple[float, int, float, float]]  # [t, seq, x, y] as its entry changed
    welcomes: list[tuple[float, str, float, float]]  # [t, zone, x, y]
    close: str | None
    errors: list[str]

    def last_acked(self, before: float) -> tuple[float, int, float, float] | None:
        earlier = [entry for entry in self.acked if entry[0] < before]
        return earlier[-1] if earlier else None

    def welcome_after(self, after: float) -> tuple[float, str, float, float] | None:
        return next((w for w in self.welcomes if w[0] > after), None)

    def current_until(self, position: Position) -> float | None:
        """When the player's acknowledged position last stopped being the stored
        `position` (the time of its next entry; inf if it still is), None if it never
        was."""
        at = shown(position)
        found = [i for i, entry in enumerate(self.acked) if entry[2:] == at]
        if not found:
            return None
        after = found[-1] + 1
        return self.acked[after][0] if after < len(self.acked) else math.inf


@dataclass(frozen=True)
class SwarmFiles:
    """Where one swarm run writes: its ledger, the file it touches once its players are
    in, its report (stdout), its log (stderr) and its users (unless it reuses another
    run's)."""

    ledger: Path
    ready: Path
    report: Path
    log: Path
    users: Path

    @classmethod
    def under(cls, folder: Path) -> SwarmFiles:
        run = folder / f"swarm-{uuid.uuid4().hex[:8]}"
        return cls(*(run.with_name(f"{run.name}.{kind}")
                     for kind in ("ledger.json", "ready", "report.json", "log", "users.json")))


class Swarm:
    """A running world_swarm and, once it has ended, its ledger."""

    def __init__(self, process: trio.Process, url: str, n: int, files: SwarmFiles,
                 users: Path) -> None:
        self.process = process
        self.url, self.n = url, n
        self._files = files
        self.users = users  # for another swarm of the same players

    async def ready(self, zone: str) -> None:
        """Wait until the swarm has its players in and measures, and `zone` counts them
        all (a zone's count alone could be a killed zone's, listed until its lease ends)."""
        async def touched() -> bool:
            return await trio.Path(self._files.ready).exists()

        await eventually(touched, "the swarm's players to be in", tries=JOIN_TRIES)
        await playing(self.url, zone, self.n)

    async def settled(self) -> None:
        """Stop the moves (SIGUSR1) and give the last ones time to be acknowledged: where
        the players were last shown is then where they are."""
        self.process.send_signal(signal.SIGUSR1)
        await trio.sleep(1)

    async def finished(self) -> dict[str, Played]:
        """End the run (SIGTERM: the swarm reports and writes its ledger) and read it."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            code = await self.process.wait()
        log = self._files.log.read_text()
        assert code == 0, f"the swarm failed ({code}):\n{log[-3000:]}"
        raw = orjson.loads(self._files.ledger.read_bytes())["players"]
        return {p["character_id"]: Played(p["character_id"], p["sent"],
                                          [tuple(a) for a in p["acked"]],
                                          [tuple(w) for w in p["welcomes"]], p["close"],
                                          p["errors"]) for p in raw}

    @property
    def report(self) -> dict[str, Any]:
        """The swarm's JSON report (once finished)."""
        report: dict[str, Any] = orjson.loads(self._files.report.read_bytes())
        return report


@asynccontextmanager
async def swarm(folder: Path, url: str, n: int, *, users: Path | None = None,
                duration_s: float = 300.0) -> AsyncIterator[Swarm]:
    """`n` players joining the zone of the api at `url` in v2 and moving at MOVE_HZ until
    `finished()` or `duration_s`: the users of the file `users` (those of an earlier
    swarm), or registered afresh."""
    files = SwarmFiles.under(folder)
    users = users or files.users
    # Opening local files: instant.
    with open(files.log, "wb") as errors, open(files.report, "wb") as output:  # noqa: ASYNC230
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "bench.world_swarm", "--url", url, "-n", str(n),
             "--protocol", "v2", "--client", "raw", "--move-hz", str(MOVE_HZ),
             "--duration", str(duration_s), "--ramp-s", "2", "--warmup-s", "0",
             "--users-file", str(users),
             "--ledger", str(files.ledger), "--ready-file", str(files.ready), "--json"],
            stdout=output, stderr=errors)
    try:
        yield Swarm(process, url, n, files, users)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()


async def listed(url: str, zone: str) -> dict[str, Any]:
    """`zone` as the api at `url` lists it while it is up (its holder and players, from
    the zone directory); empty while it is down."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        zones = (await http.get("/v1/world/zones")).json()["zones"]
    return next((z for z in zones if z["zone"] == zone and z["up"]), {})


async def players_in(url: str, zone: str) -> int:
    """The players the api at `url` counts in `zone` (0 while it is down)."""
    return int((await listed(url, zone)).get("players", 0))


async def playing(url: str, zone: str, n: int, tries: int = JOIN_TRIES) -> float:
    """Wait until `zone` counts `n` players; how long that took."""
    began = time.monotonic()

    async def counted() -> bool:
        return await players_in(url, zone) == n

    await eventually(counted, f"{n} players in {zone}", tries=tries)
    return time.monotonic() - began


async def _positions(conn: asyncpg.Connection) -> dict[str, Position]:
    rows = await conn.fetch("SELECT id, x, y FROM characters.characters")
    return {str(row["id"]): (row["x"], row["y"]) for row in rows}


async def stored(observer: Running) -> dict[str, Position]:
    """Every character's position in Postgres (a few thousand rows in this suite)."""
    positions: dict[str, Position] = await observer.services.pg.transact(_positions)
    return positions


def assert_undisturbed(report: dict[str, Any], ledger: dict[str, Played]) -> None:
    """The swarm's players, whatever happened beside them: none closed, every frame of
    theirs decoded and applied, none skipped a snapshot, input latency as in a quiet
    zone."""
    assert all(played.close is None for played in ledger.values())
    assert report["frames_failed"]["count"] == 0, report["frames_failed"]
    assert report["frames_checked"] > 0
    rates = report["snapshots_per_s_per_client"]
    assert rates["min"] >= RATE_FLOOR, rates
    p99 = report["input_latency"]["p99_ms"]
    assert p99 < P99_CEILING_MS, p99


def shown(position: Position) -> Position:
    """How a v2 snapshot shows a stored position."""
    return float32(position[0]), float32(position[1])


@asynccontextmanager
async def world(settings: Settings, nursery: trio.Nursery, tmp_path: Path, *,
                checkpoint_s: float = CHECKPOINT_S, **extra: str
                ) -> AsyncIterator[tuple[Running, Outpost, dict[str, str]]]:
    """The observer, an api process, and the environment a zone process takes (with the
    `extra` variables)."""
    env = process_env(settings, WORLD_CHECKPOINT=str(checkpoint_s), WORLD_ZONES=ZONE,
                      WORLD_SLOW_CLOSE=str(SLOW_CLOSE_S), **extra)
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


def welcomed_again(ledger: dict[str, Played], after: float = 0.0) -> int:
    """Welcomes after `after` beyond each player's first: admissions of a player that was
    in already (a welcome doubled, or a re-join nothing called for)."""
    return sum(max(0, sum(1 for w in played.welcomes if w[0] > after) - 1)
               for played in ledger.values())


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


async def zone_and_players(stack: AsyncExitStack, folder: Path, api: Outpost,
                           env: dict[str, str]) -> tuple[Outpost, Swarm]:
    """An `outpost zone` process for ZONE and PLAYERS playing it through `api`, all in, until
    `stack` closes."""
    zone = await stack.enter_async_context(started(folder, "zone", ZONE, env=env))
    players = await stack.enter_async_context(swarm(folder, api.url, PLAYERS))
    await players.ready(ZONE)
    return zone, players
