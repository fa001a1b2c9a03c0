"""Tag, on the rules API alone (docs/rules.md, "A game of your own"): whoever is "it"
passes it by touching someone. Run it with WORLD_RULES=examples.tag:Tag.

The first player in is it. It passes on when "it" comes within TOUCH of another player
(the nearest, at the end of a tick); no tag-backs: the one who just passed it on cannot
be tagged by the one it tagged for SAFE_S. When "it" leaves, it goes to a player drawn
at random (the zone's seeded generator: a replay draws the same). Everyone sees who is
it (a replicated field) and each tag as an event.
"""

from __future__ import annotations

import math

from rules.api import MOVE, Event, Field, InputSpec, Player, Setup, Step, Zone
from rules.motion import Motion

TOUCH = 2.0
SAFE_S = 2.0


class Tag:
    inputs: tuple[InputSpec, ...] = (MOVE,)
    fields: tuple[Field, ...] = (Field("it", False),)
    history_ticks = 0

    def __init__(self, setup: Setup) -> None:
        self._max_step = setup.max_step
        self._motion: Motion | None = None
        self._it: Player | None = None
        self._safe_until = 0  # the tick until which the last one tagged may not tag back
        self._safe: Player | None = None
        self._pending: Player | None = None  # given "it" at join or leave: said next step
        self._safe_ticks = 0

    def start(self, zone: Zone) -> None:
        self._motion = Motion(zone.bounds, self._max_step)
        self._safe_ticks = round(SAFE_S * zone.tick_rate_hz)

    def join(self, player: Player, tick: int) -> None:
        assert self._motion is not None
        self._motion.place(player, player.x, player.y)
        if self._it is None:
            self._give(player)

    def leave(self, player: Player) -> None:
        if player is self._it:
            self._it = None
            self._pending = None

    def step(self, step: Step) -> None:
        motion = self._motion
        assert motion is not None
        for input in step.inputs:
            dx, dy = input.values
            assert isinstance(dx, float) and isinstance(dy, float) and input.player
            motion.move(step, input.player, dx, dy)
        if self._it is None and step.players:  # it left: someone else is it
            self._give(step.rng.choice(sorted(step.players.values(),
                                              key=lambda p: p.character_id)))
        if self._pending is not None:
            step.changed(self._pending)
            step.emit(Event("it", (self._pending,), {"player": self._pending.character_id}))
            self._pending = None
        it = self._it
        if it is None:
            return
        near = [p for p in step.players.values() if p is not it and
                math.hypot(p.x - it.x, p.y - it.y) <= TOUCH and
                not (p is self._safe and step.tick < self._safe_until)]
        if near:
            tagged = min(near, key=lambda p: (math.hypot(p.x - it.x, p.y - it.y),
                                              p.character_id))
            it.set("it", False)
            step.changed(it)
            tagged.set("it", True)
            step.changed(tagged)
            self._it = tagged
            self._safe, self._safe_until = it, step.tick + self._safe_ticks
            step.emit(Event("tagged", (it, tagged), {"by": it.character_id,
                                                     "tagged": tagged.character_id}))

    def _give(self, player: Player) -> None:
        player.set("it", True)
        self._it = self._pending = player
