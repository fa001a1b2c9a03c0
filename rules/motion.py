"""Movement as the games here move (docs/rules.md, "Moving"). Sans-IO.

Per tick a player's path is at most `max_step` long: a move past what is left of that
is scaled down to it, keeping its direction. A player stays inside the zone's bounds
and outside walls (a move that would enter one stops just short of it), and positions
are kept to a thousandth of a unit, so that what a client is shown, what the database
keeps and the next welcome say are the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rules.api import Player, Step

GAP = 0.01  # how far short of a wall a blocked move stops


def thousandths(value: float) -> float:
    """`value` kept to a thousandth: round(value * 1000) / 1000, ties to even, exactly.

    Written out because compiled, round() is a call through Python (its float boxed,
    an int object made) and math.floor is not; the move of every player costs two."""
    scaled = value * 1000
    whole = math.floor(scaled)
    rest = scaled - whole  # exact: the floor of a float is a float
    if rest > 0.5 or (rest == 0.5 and whole % 2):
        whole += 1
    return whole / 1000


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: a wall."""

    min_x: float
    min_y: float
    max_x: float
    max_y: float

    def contains(self, x: float, y: float) -> bool:
        return self.min_x <= x <= self.max_x and self.min_y <= y <= self.max_y


def entry(box: Box, x: float, y: float, dx: float, dy: float) -> float:
    """Where along (x, y) + t (dx, dy), t in [0, 1], the segment first enters `box`
    (its slab intersection, Liang-Barsky); inf if it does not, or starts inside."""
    t_in, t_out = 0.0, 1.0
    for start, delta, low, high in ((x, dx, box.min_x, box.max_x),
                                    (y, dy, box.min_y, box.max_y)):
        if delta == 0.0:
            if not low <= start <= high:
                return math.inf
            continue
        t0, t1 = (low - start) / delta, (high - start) / delta
        if t0 > t1:
            t0, t1 = t1, t0
        t_in, t_out = max(t_in, t0), min(t_out, t1)
        if t_in > t_out:
            return math.inf
    return t_in if t_in > 0.0 else math.inf


def first_wall(walls: Sequence[Box], x: float, y: float, dx: float, dy: float) -> float:
    """The smallest `entry` among `walls` (inf: the segment meets none)."""
    nearest = math.inf
    for box in walls:
        t = entry(box, x, y, dx, dy)
        if t < nearest:
            nearest = t
    return nearest


class Motion:
    def __init__(self, bounds: tuple[float, float, float, float], max_step: float,
                 walls: Sequence[Box] = ()) -> None:
        self.min_x, self.min_y, self.max_x, self.max_y = bounds
        self.max_step = max_step
        self.walls = tuple(walls)

    def move(self, step: Step, player: Player, dx: float, dy: float) -> None:
        """Move `player` by (dx, dy), within what is left of its step this tick.

        Written for speed (a zone of thousands moves thousands a tick): Step.changed
        is done here in place."""
        tick = step.tick
        if player.moved_at != tick:
            player.moved_at, player.budget = tick, self.max_step
        budget = player.budget
        length = math.hypot(dx, dy)
        if length > budget:
            scale = budget / length if length else 0.0
            dx, dy, length = dx * scale, dy * scale, budget
        player.budget = budget - length
        x, y = player.x, player.y
        if self.walls:
            t = first_wall(self.walls, x, y, dx, dy)
            if t <= 1.0:
                t = max(0.0, t - GAP / length) if length else 0.0
                dx, dy = dx * t, dy * t
        x, y = x + dx, y + dy
        player.x = thousandths(self.min_x if x < self.min_x else self.max_x if x > self.max_x
                               else x)
        player.y = thousandths(self.min_y if y < self.min_y else self.max_y if y > self.max_y
                               else y)
        if player.changed_at != tick:
            player.changed_at = tick
            step.changed_players.append(player)

    def place(self, player: Player, x: float, y: float) -> None:
        """Put `player` at (x, y), inside the bounds, to a thousandth."""
        player.x = thousandths(min(max(x, self.min_x), self.max_x))
        player.y = thousandths(min(max(y, self.min_y), self.max_y))

    def blocked(self, x: float, y: float) -> bool:
        """Whether (x, y) is inside a wall."""
        return any(box.contains(x, y) for box in self.walls)
