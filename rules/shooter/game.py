"""The shooter (the default game; docs/rules.md, "The shooter"). Sans-IO.

Players move (rules/motion.py: walls stop them) and fire hitscan weapons
(weapons.json) they have unlocked. A shot is judged against where the others were at
the tick the shooter's client was showing (lag compensation, as Source does: a ring of
past positions; the zone keeps them), rewound at most `max_rewind_s`: a claim of an
older tick is taken as that oldest one, so claiming one gains a cheater nothing. The
first player the ray meets, before any wall, takes the weapon's damage. At 0 hit points
a player dies: its moves and shots are refused (`dead`) until it respawns, after
`respawn_s`, at a spawn point of the map, with full hit points. Every hit, death and
respawn is an event for whoever sees the players it is about; every death is a
`combat.killed` fact for the bus.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable

from rules.api import (
    MOVE,
    Event,
    Fact,
    Field,
    Input,
    InputSpec,
    Number,
    Player,
    Setup,
    Step,
    Text,
    Whole,
    Zone,
)
from rules.motion import Motion, first_wall
from rules.shooter.map import Map, read_map
from rules.shooter.weapons import Weapon, read_weapons

HEALTH = 100
RADIUS = 1.0  # a player, for shots: a circle this wide around its position
CELL = 64.0  # the side of the cells shots look for their targets in
KILLED = "combat.killed"


class Shooter:
    fields: tuple[Field, ...] = (Field("hp", HEALTH),)

    def __init__(self, setup: Setup) -> None:
        self.weapons: dict[str, Weapon] = read_weapons()
        self.map: Map = read_map(setup.map_path)
        self.inputs: tuple[InputSpec, ...] = (MOVE, InputSpec(
            "fire", (("weapon", Text(32, tuple(self.weapons))), ("ax", Number()),
                     ("ay", Number()), ("tick", Whole(0))), per_tick=2, queued=4))
        self._setup = setup
        self.history_ticks = 0  # set at start, once the tick rate is known
        self._rewind = 0  # ticks a shot may be judged back
        self._respawn = 0  # ticks the dead stay dead
        self._motion: Motion | None = None
        self._zone = ""

    def start(self, zone: Zone) -> None:
        self._zone = zone.zone_id
        self._rewind = math.ceil(self._setup.max_rewind_s * zone.tick_rate_hz)
        self.history_ticks = self._rewind + 1
        self._respawn = max(1, round(self._setup.respawn_s * zone.tick_rate_hz))
        self._motion = Motion(zone.bounds, self._setup.max_step, self.map.walls)

    def join(self, player: Player, tick: int) -> None:
        motion = self._motion
        assert motion is not None
        motion.place(player, player.x, player.y)
        if motion.blocked(player.x, player.y):  # a map changed under a saved position
            motion.place(player, *self.map.spawns[0])
        player.data["ready"] = {}  # weapon -> the tick it may fire again
        player.data["respawn_at"] = None  # the tick a dead player respawns

    def leave(self, player: Player) -> None:
        pass

    def step(self, step: Step) -> None:
        motion = self._motion
        assert motion is not None
        self._respawn_due(step)
        targets: dict[tuple[int, int], list[Player]] | None = None
        for input in step.inputs:
            player = input.player
            assert player is not None
            respawn_at = player.data["respawn_at"]
            if respawn_at is not None:
                step.refuse(player, input, "dead",
                            f"you are dead; you respawn at tick {respawn_at}")
            elif input.kind == "move":
                dx, dy = input.values
                assert isinstance(dx, float) and isinstance(dy, float)
                motion.move(step, player, dx, dy)
            else:
                if targets is None:  # found once a tick, only when someone fires
                    targets = _cells(step.players.values())
                self._fire(step, player, input, targets)

    def _respawn_due(self, step: Step) -> None:
        motion = self._motion
        assert motion is not None
        for player in step.players.values():
            if player.data["respawn_at"] is not None and player.data["respawn_at"] <= step.tick:
                player.data["respawn_at"] = None
                motion.place(player, *step.rng.choice(self.map.spawns))
                player.set("hp", HEALTH)
                step.changed(player)
                step.emit(Event("respawn", (player,), {"player": player.character_id,
                                                       "x": player.x, "y": player.y}))

    def _fire(self, step: Step, shooter: Player, input: Input,
              targets: dict[tuple[int, int], list[Player]]) -> None:
        name, ax, ay, claimed = input.values
        assert isinstance(name, str) and isinstance(ax, float) and isinstance(ay, float)
        assert isinstance(claimed, int)
        if name not in shooter.profile.weapons:
            step.refuse(shooter, input, "forbidden", f"{name} is not unlocked for you")
            return
        weapon = self.weapons[name]
        ready: dict[str, int] = shooter.data["ready"]
        if ready.get(name, 0) > step.tick:
            step.refuse(shooter, input, "rate_limited",
                        f"the {name} fires {weapon.shots_per_second:g} times a second")
            return
        aim = math.hypot(ax, ay)
        if aim == 0:
            step.refuse(shooter, input, "validation_failed", "aim must be a direction")
            return
        ready[name] = step.tick + max(1, round(1 / (weapon.shots_per_second * step.dt)))
        at = min(max(claimed, step.tick - self._rewind), step.tick)  # older claims clamped
        dx, dy = ax / aim * weapon.range, ay / aim * weapon.range
        assert self._motion is not None
        wall = first_wall(self._motion.walls, shooter.x, shooter.y, dx, dy)  # 0..1, or inf
        victim, nearest = None, min(wall, 1.0)
        reach = RADIUS + self._motion.max_step * (step.tick - at + 1)  # moved since `at`
        for target in _near(targets, shooter.x, shooter.y, dx, dy, reach):
            if target is shooter or target.data["respawn_at"] is not None:
                continue
            x, y = step.past.position(target, at)
            t = _ray_meets(shooter.x, shooter.y, dx, dy, x, y)
            if t < nearest:
                victim, nearest = target, t
        if victim is not None:
            self._hit(step, shooter, victim, name, weapon)

    def _hit(self, step: Step, shooter: Player, victim: Player, name: str,
             weapon: Weapon) -> None:
        hp = victim.get("hp")
        assert isinstance(hp, int)
        hp = max(0, hp - weapon.damage)
        victim.set("hp", hp)
        step.changed(victim)
        step.emit(Event("hit", (shooter, victim), {
            "shooter": shooter.character_id, "victim": victim.character_id, "weapon": name,
            "damage": weapon.damage, "hp": hp}))
        if hp:
            return
        victim.data["respawn_at"] = step.tick + self._respawn
        step.emit(Event("death", (shooter, victim), {
            "killer": shooter.character_id, "victim": victim.character_id, "weapon": name,
            "respawn_tick": victim.data["respawn_at"]}))
        event_id = str(uuid.UUID(int=step.rng.getrandbits(128), version=4))
        step.publish(Fact(KILLED, event_id, {
            "event_id": event_id, "zone_id": self._zone, "tick": step.tick, "weapon": name,
            "killer_user_id": shooter.user_id, "killer_character_id": shooter.character_id,
            "victim_user_id": victim.user_id, "victim_character_id": victim.character_id}))


def _cells(players: Iterable[Player]) -> dict[tuple[int, int], list[Player]]:
    """The players by the CELL-sided square they are in now."""
    found: dict[tuple[int, int], list[Player]] = {}
    for player in players:
        key = (math.floor(player.x / CELL), math.floor(player.y / CELL))
        found.setdefault(key, []).append(player)
    return found


def _near(cells: dict[tuple[int, int], list[Player]], x: float, y: float, dx: float,
          dy: float, reach: float) -> list[Player]:
    """The players in the cells around the segment (x, y) + [0, 1] (dx, dy), widened by
    `reach` (how far a target may have been from where it is now, plus its size)."""
    low_x, high_x = math.floor((min(x, x + dx) - reach) / CELL), \
        math.floor((max(x, x + dx) + reach) / CELL)
    low_y, high_y = math.floor((min(y, y + dy) - reach) / CELL), \
        math.floor((max(y, y + dy) + reach) / CELL)
    near: list[Player] = []
    for column in range(low_x, high_x + 1):
        for row in range(low_y, high_y + 1):
            near.extend(cells.get((column, row), ()))
    return near


def _ray_meets(x: float, y: float, dx: float, dy: float, cx: float, cy: float) -> float:
    """Where along (x, y) + t (dx, dy), t in [0, 1], the segment first meets the circle
    of RADIUS around (cx, cy); inf if it does not."""
    fx, fy = x - cx, y - cy
    c = fx * fx + fy * fy - RADIUS * RADIUS
    if c <= 0:
        return 0.0  # it starts inside the circle
    length2 = dx * dx + dy * dy
    b = fx * dx + fy * dy
    disc = b * b - length2 * c
    if disc < 0:
        return math.inf
    t = (-b - math.sqrt(disc)) / length2
    return t if 0.0 <= t <= 1.0 else math.inf
