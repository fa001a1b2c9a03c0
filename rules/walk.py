"""Walking: the zone's first game, and the smallest one on the rules API (docs/rules.md).
Players move (rules/motion.py) and see each other move; nothing else happens."""

from __future__ import annotations

from rules.api import MOVE, Field, InputSpec, Player, Setup, Step, Zone
from rules.motion import Motion


class Walk:
    inputs: tuple[InputSpec, ...] = (MOVE,)
    fields: tuple[Field, ...] = ()
    history_ticks = 0

    def __init__(self, setup: Setup) -> None:
        self._max_step = setup.max_step
        self._motion: Motion | None = None

    def start(self, zone: Zone) -> None:
        self._motion = Motion(zone.bounds, self._max_step)

    def join(self, player: Player, tick: int) -> None:
        assert self._motion is not None
        self._motion.place(player, player.x, player.y)

    def leave(self, player: Player) -> None:
        pass

    def step(self, step: Step) -> None:
        move = self._motion
        assert move is not None
        for input in step.inputs:
            dx, dy = input.values
            assert isinstance(dx, float) and isinstance(dy, float) and input.player is not None
            move.move(step, input.player, dx, dy)
