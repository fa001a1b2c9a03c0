"""The shooter's rules stepped by hand (rules/shooter/game.py on the zone's engine,
zones/simulation.py): lag compensation judged tick by tick, where the WebSocket tests
(tests/test_combat.py) can only wait for ticks. Pure logic: no trio, no sockets."""

from __future__ import annotations

import math
import tempfile

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.api import Input, Player, Profile, Setup, Zone
from rules.shooter import Shooter
from rules.shooter.game import Targets
from rules.shooter.map import read_map
from zones.simulation import Simulation

REWIND_TICKS = 4  # WORLD_MAX_REWIND_MS 200 at 20 Hz


def arena() -> Simulation:
    sim = Simulation(Shooter(Setup(max_step=100.0, max_rewind_s=0.2)),
                     Zone("z", (-500.0, -500.0, 500.0, 500.0), 20.0, seed=1))
    for name, x in (("shooter", 0.0), ("target", 10.0)):
        sim.add(Player(name, f"u-{name}", name, x, 0.0, profile=Profile(weapons=("pistol",)),
                       fields=sim.rules.fields))
    return sim


def act(sim: Simulation, who: str, kind: str, *values: object) -> None:
    player = sim.players[who]
    assert sim.queue(who, Input(kind, player.seq + 1, values))  # type: ignore[arg-type]


def hp(sim: Simulation) -> object:
    return sim.players["target"].get("hp")


def test_a_shot_is_judged_where_the_target_was_at_the_claimed_tick() -> None:
    sim = arena()
    sim.step()
    seen_at = sim.tick  # the shooter's client shows the target at (10, 0)
    act(sim, "target", "move", 0.0, 50.0)
    sim.step()  # it has moved away since
    act(sim, "shooter", "fire", "pistol", 1.0, 0.0, seen_at)
    sim.step()
    assert hp(sim) == 75


def test_without_a_claim_of_the_past_the_same_shot_misses() -> None:
    sim = arena()
    sim.step()
    act(sim, "target", "move", 0.0, 50.0)
    sim.step()
    act(sim, "shooter", "fire", "pistol", 1.0, 0.0, sim.tick + 1)  # now: it is gone
    sim.step()
    assert hp(sim) == 100


def test_a_claim_older_than_the_window_is_judged_at_its_oldest_tick() -> None:
    sim = arena()
    sim.step()
    seen_at = sim.tick
    act(sim, "target", "move", 0.0, 50.0)
    sim.step()
    for _ in range(REWIND_TICKS):  # the move is now older than the window
        sim.step()
    act(sim, "shooter", "fire", "pistol", 1.0, 0.0, seen_at)
    sim.step()
    assert hp(sim) == 100
    for _ in range(10):  # the pistol's next shot: half a second later
        sim.step()
    act(sim, "shooter", "fire", "pistol", 10.0, 50.0, sim.tick)  # where it is: a hit
    sim.step()
    assert hp(sim) == 75


coordinate = st.floats(-500.0, 500.0)


@settings(max_examples=300, deadline=None)
@given(players=st.lists(st.tuples(coordinate, coordinate), max_size=60), x=coordinate,
       y=coordinate, dx=st.floats(-400.0, 400.0), dy=st.floats(-400.0, 400.0),
       reach=st.floats(0.0, 40.0))
def test_the_targets_near_a_shot_include_everyone_within_reach_of_it(
        players: list[tuple[float, float]], x: float, y: float, dx: float, dy: float,
        reach: float) -> None:
    """The cells a shot looks in hold everyone it could meet: every player within
    `reach` of the segment (else a rewound target would be missed)."""
    everyone = [Player(f"p{i}", "u", "p", px, py) for i, (px, py) in enumerate(players)]
    targets = Targets((-500.0, -500.0, 500.0, 500.0), everyone)
    near = {p.character_id for p in targets.near(x, y, dx, dy, reach)}
    for player in everyone:
        if distance_to_segment(player.x, player.y, x, y, dx, dy) <= reach:
            assert player.character_id in near


def distance_to_segment(px: float, py: float, x: float, y: float, dx: float,
                        dy: float) -> float:
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else min(max(((px - x) * dx + (py - y) * dy) / length2, 0.0), 1.0)
    return math.hypot(px - (x + t * dx), py - (y + t * dy))


def walk(sim: Simulation, who: str, dx: float, ticks: int) -> None:
    for _ in range(ticks):
        act(sim, who, "move", dx, 0.0)
        sim.step()


def test_a_player_placed_on_joining_is_judged_where_it_was_placed() -> None:
    """A saved position outside the zone is clamped into it as the player joins: a shot
    rewound to before its first move finds it there, not where it was saved."""
    sim = arena()
    walk(sim, "shooter", 100.0, 3)  # to (300, 0): the pistol reaches the east edge
    sim.add(Player("late", "u-late", "late", 5000.0, 0.0, fields=sim.rules.fields))
    assert (sim.players["late"].x, sim.players["late"].y) == (500.0, 0.0)
    sim.step()
    act(sim, "shooter", "fire", "pistol", 1.0, 0.0, sim.tick)
    sim.step()
    assert sim.players["late"].get("hp") == 75


def test_a_shot_judged_before_a_respawn_does_not_hit_the_respawned() -> None:
    """The target dies, and respawns at the spawn point (the origin): a shot claiming a
    tick at which it was still dead misses it, though it stands in the line of fire."""
    sim = arena()
    while hp(sim) != 0:
        act(sim, "shooter", "fire", "pistol", 1.0, 0.0, sim.tick)
        walk(sim, "shooter", 0.0, 10)  # the pistol fires twice a second
    walk(sim, "shooter", -10.0, 1)  # to (-10, 0): the origin is in its line of fire
    while sim.players["target"].data["respawn_at"] is not None:
        claimed = sim.tick  # still dead here
        sim.step()
    assert (sim.players["target"].x, sim.players["target"].y) == (0.0, 0.0)
    act(sim, "shooter", "fire", "pistol", 1.0, 0.0, claimed)
    sim.step()
    assert hp(sim) == 100
    walk(sim, "shooter", 0.0, 10)
    act(sim, "shooter", "fire", "pistol", 1.0, 0.0, sim.tick)  # alive, now: it hits
    walk(sim, "shooter", 0.0, 10)
    assert hp(sim) == 75


def test_leaving_dead_and_coming_back_does_not_revive() -> None:
    sim = arena()
    while hp(sim) != 0:
        act(sim, "shooter", "fire", "pistol", 1.0, 0.0, sim.tick)
        walk(sim, "shooter", 0.0, 10)
    respawn_at = sim.players["target"].data["respawn_at"]
    sim.remove("target")
    sim.step()
    back = sim.add(Player("target", "u-target", "target", 10.0, 0.0,
                          profile=Profile(weapons=("pistol",)), fields=sim.rules.fields))
    assert (back.get("hp"), back.data["respawn_at"]) == (0, respawn_at)
    act(sim, "target", "move", 1.0, 0.0)
    stepped = sim.step()
    assert [r.code for r in stepped.refusals] == ["dead"]
    while sim.tick < respawn_at:
        sim.step()
    assert (back.get("hp"), back.data["respawn_at"]) == (100, None)


box = st.lists(st.one_of(st.floats(-50, 50), st.integers(-50, 50), st.text(max_size=2)),
               max_size=5)
maps = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries({}, optional={"walls": st.lists(box, max_size=4),
                                        "spawns": st.lists(box, max_size=4),
                                        "doors": st.integers(0, 9)}).map(orjson.dumps))


@settings(max_examples=200, deadline=None)
@given(maps)
def test_any_map_file_is_a_map_or_says_why(data: bytes) -> None:
    """WORLD_MAP is read at start: a map whose walls are boxes and whose spawn points are
    outside them, or ValueError naming the file (the process stops saying why)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as file:
        file.write(data)
        file.flush()
        try:
            found = read_map(file.name)
        except ValueError as exc:
            assert file.name in str(exc)
            return
    assert found.spawns
    for wall in found.walls:
        assert wall.min_x < wall.max_x and wall.min_y < wall.max_y
        assert not any(wall.contains(x, y) for x, y in found.spawns)
