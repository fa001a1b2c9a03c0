"""The shooter's rules stepped by hand (rules/shooter/game.py on the zone's engine,
zones/simulation.py): lag compensation judged tick by tick, where the WebSocket tests
(tests/test_combat.py) can only wait for ticks. Pure logic: no trio, no sockets."""

from __future__ import annotations

from rules.api import Input, Player, Profile, Setup, Zone
from rules.shooter import Shooter
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
