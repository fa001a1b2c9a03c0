"""The tag example (examples/tag; docs/rules.md, "A game of your own"): a game written on
the rules API alone, run by an unchanged zone over real WebSockets, and replayed: the
same joins, leaves and moves, tick by tick, give the same match, for tag and for the
shooter.

Rules: an in-process api with its zone running `examples.tag:Tag` (WORLD_RULES), on the
session's services; the replays drive the engine (zones/simulation.py) step by step.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from rules.api import Input, Player, Profile, Setup, Zone
from rules.loading import load
from server.config import Settings
from server.process import Running
from tests.helpers import running_game
from tests.world import connect, joined, new_player, next_of, send, snapshot_with, ws_url
from zones.simulation import Simulation


@pytest.fixture
async def tag(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    async with running_game(settings, nursery, "examples.tag:Tag",
                            world_max_step=50.0) as running:
        yield running


async def test_touching_someone_passes_it_on(tag: Running) -> None:
    async with httpx.AsyncClient(base_url=tag.url) as http:
        chaser, runner = await new_player(http, "Chaser"), await new_player(http, "Runner")
    chaser_id, runner_id = chaser["character"]["id"], runner["character"]["id"]
    async with connect(ws_url(tag.url, chaser["token"])) as a, \
            connect(ws_url(tag.url, runner["token"])) as b:
        await joined(a, chaser_id)  # the first in: it
        await snapshot_with(a, chaser_id, lambda me: me["it"] is True)
        await joined(b, runner_id)
        await send(b, {"type": "move", "dx": 20.0, "dy": 0.0, "seq": 1})  # away
        seen = await snapshot_with(a, runner_id, lambda e: e["x"] == 20.0)
        assert {p["id"]: p["it"] for p in seen["players"]} == {chaser_id: True,
                                                                runner_id: False}
        await send(a, {"type": "move", "dx": 19.0, "dy": 0.0, "seq": 1})  # within touch
        tagged = await next_of(b, "events")
        after = await snapshot_with(b, runner_id, lambda e: e["it"] is True)
    assert tagged["events"] == [{"kind": "tagged", "by": chaser_id, "tagged": runner_id}]
    assert {p["id"]: p["it"] for p in after["players"]} == {chaser_id: False,
                                                             runner_id: True}


Script = list[tuple[int, str, str, float, float]]  # tick, what, character, dx, dy


def replay(game: str, script: Script, seed: int) -> list[Any]:
    """Run `script` on a fresh zone of `game`; everything that happened, tick by tick."""
    sim = Simulation(load(game)(Setup(max_step=10.0)),
                     Zone("replay", (-100.0, -100.0, 100.0, 100.0), 20.0, seed))
    seqs: dict[str, int] = {}
    happened: list[Any] = []
    for tick in range(1 + max(t for t, *_ in script)):
        for _, what, character_id, dx, dy in (s for s in script if s[0] == tick):
            if what == "join":
                sim.add(Player(character_id, f"u-{character_id}", character_id, dx, dy,
                               profile=Profile(weapons=("pistol",)),
                               fields=sim.rules.fields))
            elif what == "leave":
                sim.remove(character_id)
            else:
                seqs[character_id] = seqs.get(character_id, 0) + 1
                values = (dx, dy) if what == "move" else ("pistol", dx, dy, tick - 2)
                sim.queue(character_id, Input(what, seqs[character_id], values))
        stepped = sim.step()
        happened.append((stepped.tick, sorted((p.character_id, p.x, p.y, tuple(p.fields))
                                              for p in stepped.changed),
                         [(e.kind, dict(e.data)) for e in stepped.events],
                         [(f.subject, f.id) for f in stepped.facts]))
    return happened


def script(rng: random.Random, players: int, ticks: int, fire: bool) -> Script:
    found: Script = [(0, "join", f"p{i}", rng.uniform(-20, 20), rng.uniform(-20, 20))
                     for i in range(players)]
    for tick in range(1, ticks):
        for i in range(players):
            roll = rng.random()
            kind = "fire" if fire and roll < 0.3 else "move" if roll < 0.9 else None
            if kind:
                found.append((tick, kind, f"p{i}", rng.uniform(-5, 5), rng.uniform(-5, 5)))
        if tick == ticks // 2:
            found.append((tick, "leave", "p0", 0.0, 0.0))
    return found


@pytest.mark.parametrize("game, fire", [("examples.tag:Tag", False),
                                        ("rules.shooter:Shooter", True)])
def test_the_same_inputs_give_the_same_match(game: str, fire: bool) -> None:
    inputs = script(random.Random(5), players=6, ticks=200, fire=fire)
    first, again = replay(game, inputs, seed=9), replay(game, inputs, seed=9)
    assert first == again
    assert any(events for _, _, events, _ in first), "something happened"
