"""Small games for tests, on the rules API (docs/rules.md): walking (rules/walk.py, which is
compiled, so wrapped rather than subclassed) under the inputs and fields a test gives."""

from __future__ import annotations

from rules.api import MOVE, Field, InputSpec, Player, Setup, Step, Zone
from rules.walk import Walk


class Walking:
    history_ticks = 0

    def __init__(self, setup: Setup, inputs: tuple[InputSpec, ...] = (MOVE,),
                 fields: tuple[Field, ...] = ()) -> None:
        self.inputs, self.fields = inputs, fields
        self._walk = Walk(setup)

    def start(self, zone: Zone) -> None:
        self._walk.start(zone)

    def join(self, player: Player, tick: int) -> None:
        self._walk.join(player, tick)

    def leave(self, player: Player) -> None:
        self._walk.leave(player)

    def step(self, step: Step) -> None:
        self._walk.step(step)
