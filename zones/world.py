"""The world as the sessions of one process see it: the zones, and the ways in.

A zone is reached through a ZoneLink (zones/link.py): in-process when this
process runs the zone (a LocalZone around its ZoneActor), otherwise over NATS
(a RemoteZone, zones/remote.py). `enter` checks ownership through the character service,
finds the character's zone and joins it; `travel` moves a joined character to
another zone. The zone hooks save positions through the character store (and
invalidate the cached lists they change) and publish `player.moved`.

Which zones exist is learnt from the zone directory, by a watch: a zone started
anywhere is listed and reachable by travel as soon as it claims its lease, and
shown as down once it lets go or stops renewing (zones/known.py). The zones of
WORLD_ZONE_ID and WORLD_ZONES are listed even while nobody runs them.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import trio

from bus import subjects
from bus.connection import Bus, BusUnavailable
from bus.directory import ZoneDirectory
from characters.store import (
    Character,
    cache_key,
    get_character,
    move_to_zone,
    update_positions,
)
from persistence.cache import Cache
from persistence.errors import DomainError, Forbidden, NotFound
from persistence.postgres import Postgres
from persistence.progression import get_progression
from rules.api import InputSpec, Profile, Setup, Zone
from rules.loading import Game
from zones import contract
from zones.actor import (
    Admission,
    Entrant,
    FanOut,
    Position,
    ZoneActor,
    ZoneHooks,
    each_outlet,
)
from zones.errors import ZoneUnavailable
from zones.facts import FactRelay
from zones.grid import Grid
from zones.interest import Interest
from zones.known import KnownZones
from zones.link import LocalZone, Member, ZoneLink
from zones.remote import REJOIN_EVERY_S, RemoteZone

log = logging.getLogger(__name__)

SPAWN = (0.0, 0.0)  # where a character arrives in a zone it travels to
WATCH_RETRY_S = 1.0
ROSTER_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Owned:
    """A character as its owner enters the world with it: its row, and what the games
    are told of it (its class, and its player's level and weapons: progression's)."""

    character: Character
    profile: Profile

    def entrant(self, x: float, y: float, *, placed: bool = False) -> Entrant:
        c = self.character
        return Entrant(str(c.id), str(c.user_id), c.name, x, y, placed, self.profile)


async def _read_owned(conn: asyncpg.Connection, character_id: uuid.UUID) -> Owned | None:
    character = await get_character(conn, character_id)
    if character is None:
        return None
    progression = await get_progression(conn, character.user_id)
    level, weapons = (progression.level, progression.weapons) if progression else (1, ())
    return Owned(character, Profile(character.class_, level, weapons))


@dataclass(frozen=True)
class Entered:
    owned: Owned
    admission: Admission
    zone: ZoneLink

    @property
    def character(self) -> Character:
        return self.owned.character


@dataclass(frozen=True)
class WorldConfig:
    """What the world of a process is made of (from server/config.py's Settings)."""

    game: Game  # the rules every zone of this world runs (WORLD_RULES)
    setup: Setup  # what the operator chose for it
    bounds: tuple[float, float, float, float]
    tick_rate_hz: float
    checkpoint_s: float
    lease_s: float  # a zone's lease in the zone directory
    listed: tuple[str, ...]  # zones listed by GET /v1/world/zones even while down
    view_radius: float = 0.0  # 0: everyone in a zone sees everyone
    fan_out: FanOut = each_outlet  # how a tick's views reach this process's outlets


class World:
    def __init__(self, config: WorldConfig, pg: Postgres, cache: Cache, bus: Bus) -> None:
        self._config = config
        self._pg = pg
        self._cache = cache
        self._bus = bus
        self.directory = ZoneDirectory(bus, lease_s=config.lease_s)
        self.instance_id = uuid.uuid4().hex  # this process, for zones in others
        self._local: dict[str, LocalZone] = {}  # the links of the zones this process runs
        # Links of zones that stopped here (lease lost) while members played: those
        # members are re-joined, wherever the zone runs next, until they are back.
        self._stopped: list[LocalZone] = []
        self._remote: dict[str, RemoteZone] = {}
        # (zone, why) -> times a zone running here stopped without being asked to
        # (zones/host.py: "lease_lost", "not_renewed"), for /metrics.
        self.zone_stops: Counter[tuple[str, str]] = Counter()
        self.refusals = contract.Refusals()  # what other processes sent that did not decode
        self._known = KnownZones(lease_s=config.lease_s)
        rules = config.game(config.setup)  # what every zone's game says of itself
        self.inputs: dict[str, InputSpec] = {spec.kind: spec for spec in rules.inputs}
        self.fields = tuple(f.name for f in rules.fields)
        self.facts = FactRelay(bus)  # the games' facts, on their way to JetStream
        # Automatic re-joins read Postgres a few at a time (see `rejoin`).
        self._rejoins = trio.CapacityLimiter(max(1, pg.max_size // 2))
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[World] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the tasks of the remote zone links, and hear what zones tell this process."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._hear_zones)
            nursery.start_soon(self._watch_directory)
            nursery.start_soon(self._rejoin_stopped)
            nursery.start_soon(self.facts.run)
            task_status.started(self)

    def new_zone(self, zone_id: str, *,
                 publish_tick: Callable[[Interest], None] | None = None) -> ZoneActor:
        """A zone actor for `zone_id`, with hooks into this process's services."""
        c = self._config
        hooks = ZoneHooks(self._save_positions, self._publish_moves, self.facts.add,
                          publish_tick)
        # The game's ids (a kill's event id) come from its generator: 128 bits of seed, so
        # that no two runs of a zone draw the same ones (the services drop an id seen).
        zone = Zone(zone_id, c.bounds, c.tick_rate_hz, seed=secrets.randbits(128))
        log.info("zone %s: the game's seed is %d", zone_id, zone.seed)
        return ZoneActor(zone, c.game(c.setup), hooks, checkpoint_s=c.checkpoint_s,
                         view_radius=c.view_radius, fan_out=c.fan_out)

    @property
    def tick_rate_hz(self) -> float:
        """The tick rate of this world's zones."""
        return self._config.tick_rate_hz

    @property
    def zones(self) -> dict[str, ZoneActor]:
        """The zones this process runs now."""
        return {zone_id: local.actor for zone_id, local in self._local.items()}

    def hosting(self, actor: ZoneActor) -> None:
        """This process runs `actor`'s zone now: sessions here join it directly."""
        self._local[actor.zone_id] = LocalZone(actor)

    def stopped_hosting(self, zone_id: str) -> None:
        """The zone stopped here (its positions saved). Its members still playing are
        told, and re-joined every REJOIN_EVERY_S until the zone, here again or in
        another process, takes them back, as a RemoteZone does for its members."""
        local = self._local.pop(zone_id, None)
        if local is None or not local.members:
            return
        log.warning("zone %s stopped here; %d players wait for it", zone_id,
                    len(local.members))
        for member in local.members.values():
            member.zone_lost()
        self._stopped.append(local)

    async def _rejoin_stopped(self) -> None:
        while True:
            await trio.sleep(REJOIN_EVERY_S)
            self._stopped = [local for local in self._stopped if local.members]
            for local in self._stopped:
                for member in list(local.members.values()):
                    member.rejoin()

    def link(self, zone_id: str) -> ZoneLink:
        local = self._local.get(zone_id)
        if local is not None:
            return local
        remote = self._remote.get(zone_id)
        if remote is None:
            assert self._nursery is not None, "World actor not started"
            grid = Grid(*self._config.bounds, self._config.view_radius)
            remote = self._remote[zone_id] = RemoteZone(zone_id, self._bus, self.instance_id,
                                                        grid, self.fields, self.refusals,
                                                        self._config.fan_out)
            self._nursery.start_soon(remote.run)
        return remote

    async def enter(self, user_id: uuid.UUID, character_id: uuid.UUID,
                    member: Member) -> Entered:
        return await self._enter(await self._owned(user_id, character_id), member)

    async def rejoin(self, user_id: uuid.UUID, character_id: uuid.UUID,
                     member: Member) -> Entered:
        """`enter`, for a member re-joined automatically while its zone was away. A zone
        that comes back re-joins all its players at once: they take turns at Postgres,
        half a pool at a time (the other half is for the requests a client waits on).
        All of them waiting on the pool at once would wait past its deadline, fail, and
        try again a second later, over and over: a zone of 2,000 took 20 s to fill. Only
        the read takes turns: a join of a zone that does not answer yet may wait out
        its timeout without holding the others back."""
        async with self._rejoins:
            owned = await self._owned(user_id, character_id)
        return await self._enter(owned, member)

    async def _owned(self, user_id: uuid.UUID, character_id: uuid.UUID) -> Owned:
        """The character, if it is `user_id`'s."""
        owned = await self._pg.transact(_read_owned, character_id)
        if owned is None:
            raise NotFound("no such character")
        if owned.character.user_id != user_id:
            raise Forbidden("that character is not yours")
        return owned

    async def _enter(self, owned: Owned, member: Member) -> Entered:
        character = owned.character
        zone = self.link(character.zone_id)
        admission = await zone.join(owned.entrant(character.x, character.y), member)
        # In `zone` now: any other link that still counts it as its member (one whose zone
        # stopped or went silent while it waited, and which would go on re-joining it) lets
        # it go. Each leave is a no-op for a link it is not a member of.
        others: list[ZoneLink] = [*self._stopped, *self._remote.values()]
        for other in others:
            if other is not zone:
                other.leave(str(character.id), member)
        return Entered(owned, admission, zone)

    async def travel(self, entered: Entered, zone_id: str, member: Member) -> Entered:
        """Move a joined character to `zone_id`'s spawn point; on failure it stays."""
        if not self.is_up(zone_id):
            raise ZoneUnavailable(f"zone {zone_id} is not available")
        owned, old, was = entered.owned, entered.zone, entered.admission
        character = owned.character
        to = self.link(zone_id)
        # The row first: if Postgres is down, nothing has changed yet. The old zone's save
        # of the leave is then dropped (it is guarded by zone_id): it is left behind anyway.
        await self._move_row(character, zone_id, *SPAWN)
        old.leave(str(character.id), member)
        try:
            admission = await to.join(owned.entrant(*SPAWN, placed=True), member)
        except DomainError:
            # Back where it was: the old zone remembers where it left, and says so.
            await self._move_row(character, old.zone_id, was.x, was.y)
            await old.join(owned.entrant(was.x, was.y), member)
            raise
        return Entered(owned, admission, to)

    async def place(self, character: Character, zone_id: str) -> None:
        """Put a character that is not playing at `zone_id`'s spawn point, where its next
        join takes it (the operator console's rescue of a character stranded in a zone
        that no longer runs). ZoneUnavailable if `zone_id` does not run."""
        if not self.is_up(zone_id):
            raise ZoneUnavailable(f"zone {zone_id} is not running")
        await self._move_row(character, zone_id, *SPAWN)

    async def _move_row(self, character: Character, zone_id: str, x: float, y: float) -> None:
        await self._pg.transact(move_to_zone, character.id, zone_id, x, y)
        await self._cache.invalidate(cache_key(character.user_id))

    def zone_list(self) -> list[dict[str, object]]:
        """Every zone of the world: up or not, with its stats when up."""
        now = trio.current_time()
        listed = []
        for zone_id in sorted({*self._config.listed, *self._known.seen, *self._local}):
            held = self._known.held(zone_id, now)
            listed.append(self._local[zone_id].actor.stats() if zone_id in self._local
                          else _listing(zone_id, held) if held
                          else {"zone": zone_id, "up": False, "players": 0})
        return listed

    def zone_report(self) -> list[dict[str, object]]:
        """`zone_list`, with what an operator wants besides: each running zone's owner
        process and its ticks a second (the zone's snapshots a second per player)."""
        report = self.zone_list()
        for zone in report:
            zone_id = str(zone["zone"])
            if zone["up"]:
                zone.setdefault("owner", self.instance_id)
                rate = self._known.ticks_per_s(zone_id)
                zone["snapshots_per_s"] = None if rate is None else round(rate, 2)
        return report

    async def roster(self, zone_id: str) -> contract.Roster:
        """Who plays in `zone_id` now, wherever it runs; ZoneUnavailable if it does not
        run or does not answer."""
        local = self._local.get(zone_id)
        if local is not None:
            return contract.Roster(local.actor.player_count,
                                   local.actor.roster(contract.ROSTER_MOST))
        if not self.is_up(zone_id):
            raise ZoneUnavailable(f"zone {zone_id} is not running")
        try:
            answer = await self._bus.request(subjects.zone_roster(zone_id), contract.encode(
                contract.RosterAsked()), timeout_s=ROSTER_TIMEOUT_S)
        except BusUnavailable:
            raise ZoneUnavailable(f"zone {zone_id} did not answer") from None
        roster = self.refusals.decode(contract.ROSTERS, answer, "roster")
        if roster is None:
            raise ZoneUnavailable(f"zone {zone_id} answered what this process cannot read")
        return roster

    def is_up(self, zone_id: str) -> bool:
        return zone_id in self._local or self._known.held(zone_id, trio.current_time()) is not None

    async def _watch_directory(self) -> None:
        """Keep KnownZones up to date from the zone directory's watch. A watch silent for
        a lease is started anew: no zone is held, or it was lost with a NATS restart."""
        await self._bus.connected_once.wait()
        while True:
            try:
                await self.directory.open()
                lease_s = self._known.lease_s = self.directory.lease_s
                async with self.directory.watching() as watch:
                    silent_since = trio.current_time()
                    while trio.current_time() - silent_since < lease_s:
                        change = await watch.next(wait_s=lease_s / 3)
                        if change is not None:
                            silent_since = trio.current_time()
                            zone_id, value = change
                            held = None if value is None else self.refusals.decode(
                                contract.HELD, value, "directory entry")
                            if value is None or held is not None:
                                self._known.heard(zone_id, held, silent_since)
            except BusUnavailable as exc:
                log.info("zone directory: watch interrupted (%s); watching again", exc)
                await trio.sleep(WATCH_RETRY_S)

    async def _hear_zones(self) -> None:
        """What zones in other processes say to this one: a session was taken over."""
        while True:
            try:
                await self._bus.connected_once.wait()
                async with self._bus.subscription(subjects.api_events(self.instance_id)) as heard:
                    async for message in heard:
                        news = self.refusals.decode(contract.NEWS, message.data, "news")
                        if news is None:
                            continue
                        for zone_id, character_id, session_id in news.replaced:
                            remote = self._remote.get(zone_id)
                            if remote is not None:
                                remote.replaced(character_id, session_id)
                        for zone_id, character_id, session_id, code, why, seq in news.refused:
                            remote = self._remote.get(zone_id)
                            if remote is not None:
                                remote.refused(character_id, session_id, code, why, seq)
            except BusUnavailable:
                await trio.sleep(1)

    async def _save_positions(self, positions: list[Position]) -> None:
        # Ids as the zone has them, text: asyncpg reads a uuid from it (parsing thousands
        # of uuid.UUIDs at every checkpoint showed in profiles).
        await self._pg.transact(update_positions, [
            (p.character_id, p.zone_id, p.x, p.y) for p in positions])
        # Cached character lists show positions: drop the ones this save made stale.
        await self._cache.invalidate(*{cache_key(p.user_id) for p in positions})

    async def _publish_moves(self, payloads: list[bytes]) -> None:
        await self._bus.publish_many(subjects.PLAYER_MOVED, payloads)


def _listing(zone_id: str, held: contract.Held) -> dict[str, object]:
    """A zone another process runs, as GET /v1/world/zones lists it."""
    return {"zone": zone_id, "up": True, "players": held.players, "tick": held.tick,
            "tick_rate": held.tick_rate, "tick_ms": msgspec.structs.asdict(held.tick_ms),
            "owner": held.owner}

