"""Unit tests of the zone: zones/simulation.py (movement rules, eids, the input queue)
and zones/actor.py (tick pacing, fan-out, joins and takeovers, saving positions on leave,
at checkpoints and at shutdown, retries after a failed save, player.moved batches).

Rules: no sockets, no services. The simulation is driven by calling step() directly.
The actor runs in a nursery the test cancels at the end, with a fake Outlet and fake
ZoneHooks that record what they get and when; actor tests take `autojump_clock`, so
time is trio's MockClock with autojump and every wait is in mock time (bounded by
`trio.fail_after`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from rules.api import Input, Player, Setup, Zone
from rules.walk import Walk
from zones.actor import Admission, Entrant, Position, ZoneActor, ZoneHooks
from zones.interest import V1, View
from zones.simulation import Simulation

ZONE = "zone-1"
HZ = 20.0
PERIOD = 1 / HZ
THE_ZONE = Zone(ZONE, (0.0, 0.0, 100.0, 100.0), HZ, seed=1)


# --- the simulation ------------------------------------------------------------------------


def simulation(*players: tuple[str, float, float]) -> Simulation:
    sim = Simulation(Walk(Setup(max_step=5.0)), THE_ZONE)
    for character_id, x, y in players:
        sim.add(player(character_id, x, y))
    return sim


def player(character_id: str, x: float, y: float, name: str = "") -> Player:
    return Player(character_id, f"user-{character_id}", name or f"name-{character_id}", x, y)


def queue(sim: Simulation, character_id: str, dx: float, dy: float, seq: int) -> bool:
    return sim.queue(character_id, Input("move", seq, (float(dx), float(dy))))


def stepped(sim: Simulation) -> list[str]:
    """Step; the players whose entries go out (moved, or an input acknowledged)."""
    return [p.character_id for p in sim.step().changed]


def at(sim: Simulation, character_id: str) -> tuple[float, float]:
    found = sim.players[character_id]
    return found.x, found.y


def test_moves_apply_only_at_step() -> None:
    sim = simulation(("a", 50, 50))
    assert queue(sim, "a", 1, 2, seq=1)
    assert at(sim, "a") == (50, 50)
    assert sim.tick == 0
    assert stepped(sim) == ["a"]
    assert at(sim, "a") == (51, 52)
    assert sim.tick == 1
    assert stepped(sim) == []  # nothing queued: nobody moves
    assert at(sim, "a") == (51, 52)


def test_arrival_order_across_characters_is_preserved() -> None:
    sim = simulation(("a", 10, 10), ("b", 20, 20), ("c", 30, 30))
    for character_id, seq in (("c", 1), ("a", 1), ("c", 2), ("b", 1)):
        assert queue(sim, character_id, 1, 0, seq)
    assert stepped(sim) == ["c", "a", "b"]
    assert (at(sim, "a"), at(sim, "b"), at(sim, "c")) == ((11, 10), (21, 20), (32, 30))


def test_at_most_max_inputs_per_tick_the_rest_carried_in_order() -> None:
    sim = simulation(("a", 10, 10), ("b", 50, 50))
    for seq in range(1, 7):
        assert queue(sim, "a", 0.5, 0, seq)
    assert queue(sim, "b", 0, 1, seq=1)
    sim.step()
    assert (at(sim, "a"), sim.players["a"].seq) == ((12, 10), 4)
    assert (at(sim, "b"), sim.players["b"].seq) == ((50, 51), 1)
    assert queue(sim, "a", 0, 0.5, seq=7)
    assert stepped(sim) == ["a"]
    assert (at(sim, "a"), sim.players["a"].seq) == ((13, 10.5), 7)  # 5, 6 then 7
    assert stepped(sim) == []


def test_a_long_move_is_scaled_to_max_step_in_the_same_direction() -> None:
    sim = simulation(("a", 50, 50))
    queue(sim, "a", 6, 8, seq=1)  # 10 units
    sim.step()
    assert at(sim, "a") == (53, 54)  # 5 units along (0.6, 0.8)


def test_path_length_within_one_tick_is_capped() -> None:
    sim = simulation(("a", 50, 50))
    queue(sim, "a", 3, 0, seq=1)
    queue(sim, "a", 0, 3, seq=2)
    queue(sim, "a", 0, 3, seq=3)
    sim.step()
    assert at(sim, "a") == (53, 52)  # the second move scaled to 2, the third to 0
    assert sim.players["a"].seq == 3
    queue(sim, "a", 0, 3, seq=4)  # a new tick: a full budget again
    sim.step()
    assert at(sim, "a") == (53, 55)


def test_positions_are_clamped_to_bounds_and_rounded() -> None:
    sim = simulation(("low", 1, 2), ("high", 99, 98), ("odd", 10.12345, 200), ("out", -5, -1))
    assert at(sim, "odd") == (10.123, 100)  # add() settles the entrant's position too
    assert at(sim, "out") == (0, 0)
    queue(sim, "low", -3, -4, seq=1)
    queue(sim, "high", 4, 3, seq=1)
    queue(sim, "odd", 0.0004, -1 / 3, seq=1)
    sim.step()
    assert at(sim, "low") == (0, 0)
    assert at(sim, "high") == (100, 100)
    assert at(sim, "odd") == (10.123, 99.667)


def test_eids_are_the_smallest_free_and_rest_a_tick_before_reuse() -> None:
    sim = simulation(("a", 10, 10), ("b", 20, 20), ("c", 30, 30))
    assert [sim.players[c].eid for c in "abc"] == [0, 1, 2]
    sim.remove("a")
    assert sim.add(player("d", 1, 1)).eid == 3, "0 rests until a tick"
    sim.step()
    assert sim.add(player("e", 1, 1)).eid == 0
    assert sim.add(player("f", 1, 1)).eid == 4


def test_queue_refuses_unknown_characters_and_a_full_queue() -> None:
    sim = simulation(("a", 10, 10))
    assert not queue(sim, "nobody", 1, 0, seq=1)
    assert all(queue(sim, "a", 0.1, 0, seq) for seq in range(1, 17))
    assert not queue(sim, "a", 0.1, 0, seq=17)
    sim.step()  # applies 4
    assert queue(sim, "a", 0.1, 0, seq=18)


def test_add_of_a_present_character_keeps_its_state() -> None:
    sim = simulation(("a", 10, 10))
    queue(sim, "a", 2, 0, seq=5)
    sim.step()
    again = sim.add(player("a", 70, 70, "renamed"))
    assert again is sim.players["a"]
    assert (again.x, again.y, again.seq, again.name) == (12, 10, 5, "name-a")


# --- the actor -----------------------------------------------------------------------------


class Watched:
    """A fake that wakes `until` waiters whenever it records something."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def recorded(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, check: Callable[[], object], within: float = 10.0) -> None:
        """Wait (in mock time) until `check()` is truthy; fail after `within` seconds."""
        with trio.fail_after(within):
            while not check():
                await self._changed.wait()


class FakeOutlet(Watched):
    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[tuple[float, bytes]] = []
        self.replacements = 0

    def snapshot(self, view: View) -> None:
        """As a v1 member: the JSON snapshot of its block."""
        self.snapshots.append((trio.current_time(), view.encoded(V1, None)[0]))
        self.recorded()

    def replaced(self) -> None:
        self.replacements += 1

    def refused(self, code: str, message: str, seq: int) -> None:
        raise AssertionError(f"walking refuses nothing: {code} {message}")

    def last(self) -> dict[str, Any]:
        return json.loads(self.snapshots[-1][1])

    async def ticks(self, n: int = 1) -> None:
        """Wait for `n` more ticks (so moves queued before are applied)."""
        target = len(self.snapshots) + n
        await self.until(lambda: len(self.snapshots) >= target)


class FakeHooks(Watched):
    """Records every save attempt and every successful save, with the time, and every
    player.moved batch; `failing` makes save_positions raise."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[tuple[float, list[Position]]] = []
        self.saves: list[tuple[float, list[Position]]] = []
        self.batches: list[list[bytes]] = []
        self.failing = False
        self.save_takes_s = 0.0

    async def save_positions(self, positions: list[Position]) -> None:
        await trio.lowlevel.checkpoint()
        self.attempts.append((trio.current_time(), positions))
        self.recorded()
        if self.save_takes_s:
            await trio.sleep(self.save_takes_s)
        if self.failing:
            raise RuntimeError("database down")
        self.saves.append((trio.current_time(), positions))

    async def publish_moves(self, batch: list[bytes]) -> None:
        await trio.lowlevel.checkpoint()
        self.batches.append(batch)
        self.recorded()

    def last_saved(self, character_id: str) -> Position | None:
        """What the database would hold for `character_id` after the saves so far."""
        mine = [p for _, saved in self.saves for p in saved if p.character_id == character_id]
        return mine[-1] if mine else None

    def hooks(self) -> ZoneHooks:
        return ZoneHooks(save_positions=self.save_positions, publish_moves=self.publish_moves)


def entrant(character_id: str, x: float = 10, y: float = 10) -> Entrant:
    return Entrant(character_id, f"user-{character_id}", f"name-{character_id}", x, y)


def position(character_id: str, x: float, y: float) -> Position:
    return Position(character_id, f"user-{character_id}", ZONE, x, y)


def by_id(positions: list[Position]) -> list[Position]:
    return sorted(positions, key=lambda p: p.character_id)


def actor(hooks: FakeHooks, checkpoint_s: float = 60.0) -> ZoneActor:
    return ZoneActor(THE_ZONE, Walk(Setup(max_step=5.0)), hooks.hooks(),
                     checkpoint_s=checkpoint_s)


@asynccontextmanager
async def running(zone: ZoneActor) -> AsyncIterator[ZoneActor]:
    """`zone` running in a nursery, cancelled (a shutdown) when the block ends."""
    async with trio.open_nursery() as nursery:
        await nursery.start(zone.run)
        yield zone
        nursery.cancel_scope.cancel()


async def test_ticks_are_paced_by_deadlines(autojump_clock: trio.testing.MockClock) -> None:
    outlet = FakeOutlet()
    zone = actor(FakeHooks())
    await zone.join(entrant("a"), outlet)
    async with running(zone):
        start = trio.current_time()
        await outlet.ticks(40)
    times = [t for t, _ in outlet.snapshots[:40]]
    assert times == [pytest.approx(start + n * PERIOD, abs=1e-9) for n in range(1, 41)]
    assert [json.loads(p)["tick"] for _, p in outlet.snapshots[:40]] == list(range(1, 41))
    assert zone.counts.skipped_ticks == 0


async def test_a_join_can_come_before_the_first_tick_whose_times_are_null_until_then(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Why GET /v1/world/zones may list a zone up with null tick times (docs/protocol.md):
    a zone takes joins as soon as it runs, a period before its first tick ends."""
    outlet = FakeOutlet()
    async with running(actor(FakeHooks())) as zone:
        admission = await zone.join(entrant("a"), outlet)
        before = zone.stats()
        await outlet.ticks(2)  # the second tick began after the first had ended
        after = zone.stats()
    assert admission.tick == 0
    assert (before["tick"], before["tick_ms"]) == (0, dict.fromkeys(("p50", "p99", "max")))
    assert isinstance(after["tick"], int) and after["tick"] >= 2
    tick_ms = after["tick_ms"]
    assert isinstance(tick_ms, dict) and set(tick_ms) == {"p50", "p99", "max"}
    assert all(isinstance(ms, float) and ms >= 0 for ms in tick_ms.values()), tick_ms


async def test_every_member_gets_the_same_payload_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outlets = [FakeOutlet() for _ in range(3)]
    zone = actor(FakeHooks())
    for i, outlet in enumerate(outlets):
        await zone.join(entrant(f"c{i}"), outlet)
    async with running(zone):
        await outlets[0].ticks(3)
    first, *others = ([payload for _, payload in outlet.snapshots[:3]] for outlet in outlets)
    for payloads in others:
        assert all(mine is theirs for mine, theirs in zip(payloads, first, strict=True))
    assert {player["id"] for player in outlets[0].last()["players"]} == {"c0", "c1", "c2"}


async def test_a_second_join_replaces_the_older_outlet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = FakeHooks()
    older, newer = FakeOutlet(), FakeOutlet()
    async with running(actor(hooks)) as zone:
        admission = await zone.join(entrant("a", 10, 10), older)
        assert admission == Admission(ZONE, zone.tick, HZ, 10, 10, eid=0)
        zone.move("a", 3, 0, seq=1)
        await older.ticks()
        again = await zone.join(entrant("a", 10, 10), newer)  # a stale row: 10, 10
        assert (again.x, again.y) == (13, 10)  # the zone's state wins
        assert (older.replacements, newer.replacements) == (1, 0)
        zone.leave("a", older)  # the older session ending: the character stays
        assert zone.player_count == 1
        await newer.ticks()
        assert [p["id"] for p in newer.last()["players"]] == ["a"]
        assert hooks.attempts == []
        zone.leave("a", newer)
        assert zone.player_count == 0


async def test_leave_saves_promptly_and_a_rejoin_gets_the_last_known_position(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = FakeHooks()
    outlet = FakeOutlet()
    async with running(actor(hooks, checkpoint_s=60)) as zone:
        await zone.join(entrant("a", 10, 10), outlet)
        zone.move("a", 3, 4, seq=1)
        await outlet.ticks()
        left_at = trio.current_time()
        zone.leave("a", outlet)
        # The row is read before the save lands: the entrant still says 10, 10.
        admission = await zone.join(entrant("a", 10, 10), FakeOutlet())
        assert (admission.x, admission.y) == (13, 14)
        await hooks.until(lambda: hooks.saves)
    saved_at, positions = hooks.saves[0]
    assert positions == [position("a", 13, 14)]
    assert saved_at == left_at  # no mock time passed: not waiting for the checkpoint


async def test_checkpoint_saves_members_who_moved_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = FakeHooks()
    outlet = FakeOutlet()
    async with running(actor(hooks, checkpoint_s=1)) as zone:
        start = trio.current_time()
        await zone.join(entrant("mover"), outlet)
        await zone.join(entrant("idle", 20, 20), FakeOutlet())
        zone.move("mover", 1, 1, seq=1)
        await hooks.until(lambda: hooks.saves)
        assert hooks.saves[0][0] == pytest.approx(start + 1.0, abs=1e-6)
        assert hooks.saves[0][1] == [position("mover", 11, 11)]
        await trio.sleep(3.5)  # three more checkpoints, nothing changed
        assert len(hooks.attempts) == 1


async def test_shutdown_saves_every_members_current_position(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = FakeHooks()
    outlet = FakeOutlet()
    async with running(actor(hooks, checkpoint_s=60)) as zone:
        await zone.join(entrant("a", 10, 10), outlet)
        await zone.join(entrant("b", 20, 20), FakeOutlet())
        zone.move("a", 1, 0, seq=1)
        zone.move("b", 0, -2, seq=1)
        await outlet.ticks()
        assert hooks.attempts == []
    assert len(hooks.saves) == 1
    assert by_id(hooks.saves[0][1]) == [position("a", 11, 10), position("b", 20, 18)]


@pytest.mark.parametrize("lease_left_s", [0.5, 30.0])
async def test_the_shutdown_save_ends_with_the_lease(
    autojump_clock: trio.testing.MockClock, lease_left_s: float
) -> None:
    """Once its lease may have ended another process may run the zone: a save landing
    then would overwrite that zone's positions with older ones."""
    hooks = FakeHooks()
    hooks.save_takes_s = 1.0
    outlet = FakeOutlet()
    async with running(actor(hooks, checkpoint_s=60)) as zone:
        await zone.join(entrant("a", 10, 10), outlet)
        zone.move("a", 1, 0, seq=1)
        await outlet.ticks()
        zone.lease_ends_at = trio.current_time() + lease_left_s
        stopping = trio.current_time()
    assert [positions for _, positions in hooks.attempts] == [[position("a", 11, 10)]]
    if lease_left_s < hooks.save_takes_s:
        assert hooks.saves == []
        assert trio.current_time() == pytest.approx(stopping + lease_left_s)
    else:
        assert [positions for _, positions in hooks.saves] == [[position("a", 11, 10)]]


async def test_publish_moves_gets_one_batch_per_tick_with_one_payload_per_mover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = FakeHooks()
    outlet = FakeOutlet()
    async with running(actor(hooks)) as zone:
        await zone.join(entrant("a", 10, 10), outlet)
        await zone.join(entrant("b", 20, 20), FakeOutlet())
        await zone.join(entrant("c", 30, 30), FakeOutlet())
        zone.move("a", 1, 0, seq=1)
        zone.move("b", 0, 1, seq=1)
        zone.move("a", 1, 0, seq=2)
        await outlet.ticks()
        first_tick = outlet.last()["tick"]
        await outlet.ticks(3)  # three quiet ticks
        zone.move("c", -1, 0, seq=1)
        await outlet.ticks()
        await hooks.until(lambda: len(hooks.batches) == 2)
        await outlet.ticks(3)  # and no batch for these
    assert len(hooks.batches) == 2
    assert [json.loads(payload) for payload in hooks.batches[0]] == [
        {"character_id": "a", "user_id": "user-a", "zone_id": ZONE, "x": 12, "y": 10,
         "tick": first_tick},
        {"character_id": "b", "user_id": "user-b", "zone_id": ZONE, "x": 20, "y": 21,
         "tick": first_tick}]
    assert [json.loads(payload) for payload in hooks.batches[1]] == [
        {"character_id": "c", "user_id": "user-c", "zone_id": ZONE, "x": 29, "y": 30,
         "tick": first_tick + 4}]


async def test_a_failed_save_is_retried_at_a_later_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = FakeHooks()
    hooks.failing = True
    mover, leaver = FakeOutlet(), FakeOutlet()
    async with running(actor(hooks, checkpoint_s=1)) as zone:
        start = trio.current_time()
        await zone.join(entrant("mover", 10, 10), mover)
        await zone.join(entrant("leaver", 20, 20), leaver)
        zone.move("mover", 2, 0, seq=1)
        zone.move("leaver", 0, 2, seq=1)
        await mover.ticks()
        zone.leave("leaver", leaver)
        await hooks.until(lambda: len(hooks.attempts) == 2)  # the leave, the first checkpoint
        assert by_id(hooks.attempts[1][1]) == [position("leaver", 20, 22),
                                               position("mover", 12, 10)]
        hooks.failing = False
        await hooks.until(lambda: hooks.saves)
        await trio.sleep(2.5)  # later checkpoints: nothing left to save
    assert len(hooks.saves) == 1
    saved_at, positions = hooks.saves[0]
    assert saved_at == pytest.approx(start + 2.0, abs=1e-6)  # the second checkpoint
    assert by_id(positions) == [position("leaver", 20, 22), position("mover", 12, 10)]


async def test_a_rejoin_from_a_stale_row_still_saves_a_move_back_to_that_row(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = FakeHooks()
    first, second = FakeOutlet(), FakeOutlet()
    async with running(actor(hooks, checkpoint_s=1)) as zone:
        await zone.join(entrant("a", 10, 10), first)
        zone.move("a", 3, 4, seq=1)
        await first.ticks()
        zone.leave("a", first)
        await hooks.until(lambda: hooks.saves)  # the row now says 13, 14
        await zone.join(entrant("a", 10, 10), second)  # read before that save landed
        zone.move("a", -3, -4, seq=2)  # back to 10, 10
        await second.ticks()
        await trio.sleep(2.5)  # two checkpoints; then the shutdown save
    assert hooks.last_saved("a") == position("a", 10, 10)  # it stays at 13, 14
