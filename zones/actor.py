"""The zone actor: owns a zone's players, its game and its tick loop.

The boundary with sessions is small on purpose, so that it can be crossed over
NATS without touching either side: sessions hand in joins, inputs (moves, and the
game's other inputs) and leaves; the zone runs its game's rules (rules/api.py) on
them at each tick, and hands each member's `Outlet` the view of its block at every
tick (one view per block, shared, each form encoded once, the tick's events about
someone in the block with it: zones/interest.py), the refusals of its inputs, and
tells it when a newer session took its character over. Saving positions, publishing
`player.moved` and the game's facts are hooks given at start, so the zone knows
nothing of Postgres or NATS.

Ticks are paced by deadlines (`start + n * period` on trio's clock), so they do
not drift; a zone that falls more than a tick behind skips the missed ticks
instead of bursting. The tick never waits on a client, on Postgres or on NATS:
outlets never block, positions are saved by a separate task (on leave at once,
every player every `checkpoint_s`, everything at shutdown), and a tick's
`player.moved` batch goes to a publisher task through a small channel (a batch
that does not fit is dropped and counted: the event is best effort).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
import trio

from rules.api import DEFAULT_PROFILE, Fact, Input, Player, Profile, Rules, Scalar, Zone
from zones.context import ZONE
from zones.grid import Grid
from zones.interest import Interest, View
from zones.simulation import Simulation
from zones.stats import ZoneCounts

log = logging.getLogger(__name__)

FANOUT_YIELD_EVERY = 256  # a fan-out over thousands of outlets must not hold the loop
SHUTDOWN_SAVE_TIMEOUT_S = 5.0
LAST_KNOWN_MAX = 10_000


class Outlet(Protocol):
    """Where a zone sends one member's output. Never blocks."""

    def snapshot(self, view: View) -> None:
        """The view of a tick; a slow member keeps only the newest."""

    def replaced(self) -> None:
        """A newer session joined this character; this one must end."""

    def refused(self, code: str, message: str, seq: int) -> None:
        """The game would not take its input `seq`: tell the client (an `error`)."""


# Hands each outlet its view of a tick, of one zone, the members of a block one after
# another. A process whose outlets can write a tick's frames in one go gives its own
# (server/ws/outlet.py, `fan_out`); `each_outlet` is the plain one.
FanOut = Callable[[Sequence[tuple[Outlet, View]]], None]


def each_outlet(snapshots: Sequence[tuple[Outlet, View]]) -> None:
    for outlet, view in snapshots:
        outlet.snapshot(view)


@dataclass(frozen=True)
class Entrant:
    """A character asking to enter, with its last saved position."""

    character_id: str
    user_id: str
    name: str
    x: float
    y: float
    placed: bool = False  # put it at (x, y) exactly (a travel's spawn point), whatever it knows
    profile: Profile = DEFAULT_PROFILE  # what the services know of it (class, weapons...)


@dataclass(frozen=True)
class Admission:
    zone_id: str
    tick: int
    tick_rate_hz: float
    x: float
    y: float
    eid: int  # the character's number in this zone's v2 snapshots


@dataclass(frozen=True)
class Position:
    character_id: str
    user_id: str
    zone_id: str
    x: float
    y: float


@dataclass(frozen=True)
class ZoneHooks:
    save_positions: Callable[[list[Position]], Awaitable[None]]
    publish_moves: Callable[[list[bytes]], Awaitable[None]]
    # The game's facts (rules/api.py, `Fact`), each to be announced once; must not block.
    publish_facts: Callable[[list[Fact]], None] | None = None
    # Each tick, once, for members in other processes (the zone's feed); must not block.
    publish_tick: Callable[[Interest], None] | None = None


class ZoneActor:
    def __init__(self, zone: Zone, rules: Rules, hooks: ZoneHooks, *,
                 checkpoint_s: float = 5.0, view_radius: float = 0.0,
                 fan_out: FanOut = each_outlet) -> None:
        self.zone_id = zone.zone_id
        self._fan_out = fan_out
        self.tick_rate_hz = zone.tick_rate_hz
        self._sim = Simulation(rules, zone)
        self._fields = rules.fields
        self._interest = Interest(self.zone_id, Grid(*zone.bounds, view_radius),
                                  epoch=uuid.uuid4().hex,
                                  fields=tuple(f.name for f in rules.fields))
        self._hooks = hooks
        self._checkpoint_s = checkpoint_s
        self._outlets: dict[str, Outlet] = {}
        self._by_eid: dict[int, Outlet] = {}  # the same outlets, by their avatars' eids
        self._saved: dict[str, tuple[float, float]] = {}  # last position saved, per member
        self._leaving: dict[str, Position] = {}  # left, position not saved yet
        # Where members who left were, newest first out: a rejoin may read its row before
        # the save of its leave has landed, and this zone knows better than that row.
        self._last_known: OrderedDict[str, Position] = OrderedDict()
        self._save_now = trio.Event()
        self._moves_out, self._moves_in = trio.open_memory_channel[list[bytes]](2)
        self.counts = ZoneCounts()
        # When the lease this zone runs under may end (trio's clock; set by its host): no
        # position is saved after it, when another process may run the zone.
        self.lease_ends_at = math.inf

    # --- the interface sessions use --------------------------------------------------------

    async def join(self, entrant: Entrant, outlet: Outlet) -> Admission:
        """Admit `entrant` (or take over its character from an older session)."""
        older = self._outlets.get(entrant.character_id)
        if older is not None and older is not outlet:
            older.replaced()
        character_id = entrant.character_id
        player = self._sim.players.get(character_id)
        if player is None:
            known = self._last_known.pop(character_id, None)
            x, y = (known.x, known.y) if known and not entrant.placed else (entrant.x, entrant.y)
            self._saved[character_id] = (x, y)  # what the row holds, or will once saved
            player = self._sim.add(Player(character_id, entrant.user_id, entrant.name, x, y,
                                          profile=entrant.profile, fields=self._fields))
            self._interest.enter(player.eid, character_id, player.name, player.x, player.y,
                                 player.seq, tuple(player.fields))
        self._outlets[character_id] = outlet
        self._by_eid[player.eid] = outlet
        return Admission(self.zone_id, self._sim.tick, self.tick_rate_hz, player.x, player.y,
                         player.eid)

    def move(self, character_id: str, dx: float, dy: float, seq: int) -> None:
        self.act(character_id, Input("move", seq, (float(dx), float(dy))))

    def act(self, character_id: str, input: Input) -> None:
        """One of the game's inputs (validated at the edge), for the next tick."""
        if not self._sim.queue(character_id, input):
            self.counts.inputs_dropped += 1

    def leave(self, character_id: str, outlet: Outlet) -> None:
        """`outlet`'s session ended; a no-op if a newer session owns the character now."""
        if self._outlets.get(character_id) is not outlet:
            return
        del self._outlets[character_id]
        player = self._sim.remove(character_id)
        self._saved.pop(character_id, None)
        if player is not None:
            del self._by_eid[player.eid]
            self._interest.leave(player.eid)
            position = self._leaving[character_id] = self._position(player)
            self._last_known[character_id] = position
            if len(self._last_known) > LAST_KNOWN_MAX:
                self._last_known.popitem(last=False)
            self._save_now.set()

    @property
    def player_count(self) -> int:
        return len(self._outlets)

    @property
    def tick(self) -> int:
        return self._sim.tick

    @property
    def inputs_applied(self) -> int:
        return self._sim.inputs_applied

    def roster(self, most: int) -> list[tuple[str, str, str, float, float, dict[str, Scalar]]]:
        """Who plays here, `most` of them at most: (character, user, name, x, y, the
        game's fields by name), for the operator console."""
        names = [f.name for f in self._fields]
        players = (p for p in self._sim.players.values() if p.character_id in self._outlets)
        return [(p.character_id, p.user_id, p.name, p.x, p.y,
                 dict(zip(names, p.fields, strict=True)))
                for p, _ in zip(players, range(most), strict=False)]

    def stats(self) -> dict[str, object]:
        """What GET /v1/world/zones says of this zone: its players and recent tick times."""
        p50, p99, most = self.counts.ticks.percentiles_ms(0.5, 0.99, 1.0)
        return {"zone": self.zone_id, "up": True, "players": self.player_count,
                "tick": self.tick, "tick_rate": self.tick_rate_hz,
                "tick_ms": {"p50": p50, "p99": p99, "max": most}}

    # --- the actor -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[ZoneActor] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        ZONE.set(self.zone_id)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._saver)
                nursery.start_soon(self._publisher)
                task_status.started(self)
                await self._tick_loop()
        finally:
            deadline = min(trio.current_time() + SHUTDOWN_SAVE_TIMEOUT_S, self.lease_ends_at)
            with trio.move_on_at(deadline) as scope:
                scope.shield = True
                if not await self._save_changed(everyone=True):
                    log.error("zone %s: positions not saved at shutdown", self.zone_id)
            if scope.cancelled_caught:
                log.error("zone %s: shutdown save cut short (no write may outlast its lease)",
                          self.zone_id)

    async def _tick_loop(self) -> None:
        period = 1 / self.tick_rate_hz
        start = trio.current_time()
        n = 0
        while True:
            n += 1
            behind = trio.current_time() - (start + n * period)
            if behind > period:  # fell behind (a stall): skip, do not burst to catch up
                skipped = int(behind / period)
                self.counts.skipped_ticks += skipped
                n += skipped
            await trio.sleep_until(start + n * period)
            began = time.perf_counter()
            await self._step()
            self.counts.ticks.observe(time.perf_counter() - began)

    async def _step(self) -> None:
        stepped = self._sim.step()
        if stepped.fault is not None:
            # A bug of the game's, met by some input of this tick: logged and counted, and
            # the zone goes on with what the step did before it (never a dead process).
            self.counts.rules_faults += 1
            log.error("zone %s: the game failed tick %d", self.zone_id, stepped.tick,
                      exc_info=stepped.fault)
        interest = self._interest
        interest.seal(stepped.tick, stepped.changed,
                      [(e.kind, [p.eid for p in e.about], e.data) for e in stepped.events])
        for refusal in stepped.refusals:
            outlet = self._outlets.get(refusal.player.character_id)
            if outlet is not None:
                outlet.refused(refusal.code, refusal.message, refusal.seq)
        if stepped.facts and self._hooks.publish_facts is not None:
            self._hooks.publish_facts(stepped.facts)
        if self._hooks.publish_tick is not None:
            self._hooks.publish_tick(interest)
        by_eid, fanout = self._by_eid, []
        for cell, eids in interest.members():  # a cell at a time: one view for its members
            view = None
            for eid in eids:
                outlet = by_eid.get(eid)
                if outlet is not None:
                    view = view or interest.view(cell)
                    fanout.append((outlet, view))
        for start in range(0, len(fanout), FANOUT_YIELD_EVERY):
            if start:
                await trio.lowlevel.checkpoint()
            self._fan_out(fanout[start:start + FANOUT_YIELD_EVERY])
        tick = stepped.tick
        moved = [p for p in stepped.changed if p.moved_at == tick]
        if moved:
            batch = [orjson.dumps({"character_id": p.character_id, "user_id": p.user_id,
                                   "zone_id": self.zone_id, "x": p.x, "y": p.y, "tick": tick})
                     for p in moved]
            try:
                self._moves_out.send_nowait(batch)
            except trio.WouldBlock:
                self.counts.move_batches_dropped += 1

    async def _publisher(self) -> None:
        async for batch in self._moves_in:
            try:
                await self._hooks.publish_moves(batch)
            except Exception as exc:  # best effort: the bus may be down
                log.warning("zone %s: player.moved batch lost: %r", self.zone_id, exc)

    async def _saver(self) -> None:
        checkpoint = trio.current_time() + self._checkpoint_s
        while True:
            with trio.move_on_at(checkpoint):
                await self._save_now.wait()
            self._save_now = trio.Event()
            everyone = trio.current_time() >= checkpoint
            if everyone:
                checkpoint = trio.current_time() + self._checkpoint_s
            await self._save_changed(everyone=everyone)

    async def _save_changed(self, *, everyone: bool) -> bool:
        """Save who left (and, with `everyone`, every member who moved since its last
        save) in one batch; True if saved. A failure keeps them for the next try."""
        positions = dict(self._leaving)
        if everyone:
            for player in self._sim.players.values():
                if self._saved.get(player.character_id) != (player.x, player.y):
                    positions[player.character_id] = self._position(player)
        if not positions:
            return True
        try:
            await self._hooks.save_positions(list(positions.values()))
        except Exception as exc:
            log.warning("zone %s: saving %d positions failed, will retry: %r", self.zone_id,
                        len(positions), exc)
            return False
        for character_id, saved in positions.items():
            if self._leaving.get(character_id) == saved:
                del self._leaving[character_id]
            if character_id in self._saved:
                self._saved[character_id] = (saved.x, saved.y)
        return True

    def _position(self, player: Player) -> Position:
        return Position(player.character_id, player.user_id, self.zone_id, player.x, player.y)
