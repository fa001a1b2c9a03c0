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
        self._bounds = (0.0, 0.0, 0.0, 0.0)
        self._zone = ""
        self._dead: dict[str, Player] = {}  # by character id, the first to respawn first

    def start(self, zone: Zone) -> None:
        self._zone = zone.zone_id
        self._bounds = zone.bounds
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
        player.data["alive_since"] = tick + 1  # no shot judged at an earlier tick hits it
        dead = self._dead.get(player.character_id)
        if dead is not None:  # it left dead, and is back before its respawn: still dead
            player.data["respawn_at"] = dead.data["respawn_at"]
            player.set("hp", 0)
            self._dead[player.character_id] = player

    def leave(self, player: Player) -> None:
        pass  # one that leaves dead stays in `_dead`: coming back does not revive it

    def step(self, step: Step) -> None:
        motion = self._motion
        assert motion is not None
        self._respawn_due(step)
        targets: Targets | None = None
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
                    targets = Targets(self._bounds, step.players.values())
                self._fire(step, player, input, targets)

    def _respawn_due(self, step: Step) -> None:
        motion = self._motion
        assert motion is not None
        while self._dead:  # all wait as long: the first to die is the first due
            player = next(iter(self._dead.values()))
            if player.data["respawn_at"] > step.tick:
                break
            del self._dead[player.character_id]
            if not player.present:
                continue  # it left; it joins again alive
            player.data["respawn_at"] = None
            player.data["alive_since"] = step.tick
            motion.place(player, *step.rng.choice(self.map.spawns))
            player.set("hp", HEALTH)
            step.changed(player)
            step.emit(Event("respawn", (player,), {"player": player.character_id,
                                                   "x": player.x, "y": player.y}))

    def _fire(self, step: Step, shooter: Player, input: Input,
              targets: Targets) -> None:
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
        if not 0 < aim < math.inf:  # the edge bounds ax, ay: this is the game's own guard
            step.refuse(shooter, input, "validation_failed", "aim must be a direction")
            return
        ready[name] = step.tick + max(1, round(1 / (weapon.shots_per_second * step.dt)))
        at = min(max(claimed, step.tick - self._rewind), step.tick)  # older claims clamped
        dx, dy = ax / aim * weapon.range, ay / aim * weapon.range
        assert self._motion is not None
        wall = first_wall(self._motion.walls, shooter.x, shooter.y, dx, dy)  # 0..1, or inf
        victim, nearest = None, min(wall, 1.0)
        reach = RADIUS + self._motion.max_step * (step.tick - at + 1)  # moved since `at`
        length = weapon.range
        x0, y0 = shooter.x, shooter.y
        for target in targets.near(x0, y0, dx, dy, reach):
            # Where a target is now tells cheaply whether it could have been in the way
            # at `at` (within `reach` of the segment); only those are rewound.
            fx, fy = target.x - x0, target.y - y0
            if abs(fx * dy - fy * dx) > reach * length or \
                    not -reach * length <= fx * dx + fy * dy <= (length + reach) * length:
                continue
            if target is shooter or target.data["respawn_at"] is not None or \
                    target.data["alive_since"] > at:  # dead, or not yet here, at `at`
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
        self._dead[victim.character_id] = victim
        step.emit(Event("death", (shooter, victim), {
            "killer": shooter.character_id, "victim": victim.character_id, "weapon": name,
            "respawn_tick": victim.data["respawn_at"]}))
        event_id = str(uuid.UUID(int=step.rng.getrandbits(128), version=4))
        step.publish(Fact(KILLED, event_id, {
            "event_id": event_id, "zone_id": self._zone, "tick": step.tick, "weapon": name,
            "killer_user_id": shooter.user_id, "killer_character_id": shooter.character_id,
            "victim_user_id": victim.user_id, "victim_character_id": victim.character_id}))


class Targets:
    """The players by the CELL-sided square of the zone they are in now, found once a
    tick when someone fires; a cell's key is a number (column * rows + row), cheaper to
    hash than a pair."""

    def __init__(self, bounds: tuple[float, float, float, float],
                 players: Iterable[Player]) -> None:
        self.min_x, self.min_y, max_x, max_y = bounds
        self.columns = int((max_x - self.min_x) // CELL) + 1
        self.rows = int((max_y - self.min_y) // CELL) + 1
        self.cells: dict[int, list[Player]] = {}
        rows, min_x, min_y = self.rows, self.min_x, self.min_y
        for player in players:  # all inside the bounds: motion keeps them there
            key = int((player.x - min_x) // CELL) * rows + int((player.y - min_y) // CELL)
            found = self.cells.get(key)
            if found is None:
                self.cells[key] = [player]
            else:
                found.append(player)

    def near(self, x: float, y: float, dx: float, dy: float, reach: float) -> list[Player]:
        """The players in the cells within `reach` of the segment (x, y) + [0, 1]
        (dx, dy): column by column, the rows the segment crosses there, widened by
        `reach` (how far a target may have been from where it is now, plus its size)."""
        near: list[Player] = []
        x, y = x - self.min_x, y - self.min_y
        first = max(0, int((min(x, x + dx) - reach) // CELL))
        last = min(self.columns - 1, int((max(x, x + dx) + reach) // CELL))
        for column in range(first, last + 1):
            low, high = y, y + dy  # where the segment is over this column, widened
            if dx != 0.0:
                t0 = min(max((column * CELL - reach - x) / dx, 0.0), 1.0)
                t1 = min(max(((column + 1) * CELL + reach - x) / dx, 0.0), 1.0)
                low, high = y + t0 * dy, y + t1 * dy
            if low > high:
                low, high = high, low
            base = column * self.rows
            for row in range(max(0, int((low - reach) // CELL)),
                             min(self.rows - 1, int((high + reach) // CELL)) + 1):
                found = self.cells.get(base + row)
                if found is not None:
                    near.extend(found)
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
