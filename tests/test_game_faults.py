"""A game that raises (a bug of its own, met by one player's input) costs that tick's
work after the raise, never the zone or its process: the fault is logged and counted
(`outpost_zone_rules_faults_total`), and everyone goes on playing.

Rules: an in-process api with its zone running `Faulty` (WORLD_RULES, below), on the
session's services, played over real WebSockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from rules.api import MOVE, InputSpec, Number, Setup, Step
from server.config import Settings
from server.process import Running
from tests.games import Walking
from tests.helpers import eventually, metric, running_game
from tests.world import connect, joined, new_player, send, snapshot_with, ws_url


class Faulty(Walking):
    """Walking, and a `boom` that the game cannot take: it divides by its `n`."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup, inputs=(MOVE, InputSpec("boom", (("n", Number()),))))

    def step(self, step: Step) -> None:
        for input in step.inputs:
            if input.kind == "boom":
                n = input.values[0]
                assert isinstance(n, float) and input.player is not None
                input.player.data["share"] = 1 / n  # n = 0: ZeroDivisionError, the game's
        super().step(Step(step.tick, step.dt, [i for i in step.inputs if i.kind == "move"],
                             step.players, step.rng, step.past, step.changed_players))


@pytest.fixture
async def faulty(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    async with running_game(settings, nursery, f"{__name__}:Faulty") as running:
        yield running


async def test_a_game_that_raises_costs_a_tick_not_the_zone(faulty: Running) -> None:
    async with httpx.AsyncClient(base_url=faulty.url) as http:
        bomber, other = await new_player(http, "Bomber"), await new_player(http, "Other")
    bomber_id, other_id = bomber["character"]["id"], other["character"]["id"]
    async with connect(ws_url(faulty.url, bomber["token"])) as a, \
            connect(ws_url(faulty.url, other["token"])) as b:
        await joined(a, bomber_id)
        await joined(b, other_id)
        await send(a, {"type": "boom", "n": 0, "seq": 1})
        await eventually(lambda: _faults(faulty), "the fault counted")
        await send(b, {"type": "move", "dx": 3.0, "dy": 0.0, "seq": 1})  # play goes on
        await send(a, {"type": "move", "dx": 0.0, "dy": 2.0, "seq": 2})
        await snapshot_with(b, other_id, lambda e: e["x"] == 3.0)
        seen = await snapshot_with(b, bomber_id, lambda e: e["y"] == 2.0)
    assert {p["id"] for p in seen["players"]} == {bomber_id, other_id}
    assert await _faults(faulty) == 1


async def _faults(running: Running) -> float:
    return await metric(f"{running.url}/metrics", "outpost_zone_rules_faults_total", zone="z1")
