"""The rules API: how a zone runs a game (docs/rules.md). Sans-IO.

A game is a `Rules` object its zone holds. It declares the inputs its players may
send (each an `InputSpec`: a message type, its fields and their limits, checked at
the edge before the rules ever see one) and the per-player fields that are replicated
(each a `Field`: it appears in every snapshot, v1 and v2), and it is told what
happens: a character joins (`join`), leaves (`leave`), and each fixed step (`step`),
with every input of that tick, in arrival order. It changes the `Player`s it is
handed and tells the `Step` what else happened: events, which reach every player who
can see a player they are about, and facts, which leave the zone on the bus once.

The zone does everything else: IO, interest management, encoding, persistence,
sessions. Rules do no IO and are deterministic: the same joins, leaves and inputs, tick
by tick, give the same match (randomness comes from `Step.rng`, seeded by the zone), so
a test can replay one.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Scalar = bool | int | float | str | None  # what inputs, fields, events and facts hold


# --- what players may send -------------------------------------------------------------------

# The largest magnitude of a number in a message: arithmetic on a larger one overflows
# (the length of an aim of 1.5e308, 1.5e308 is inf), and the messages between processes
# carry no larger (zones/contract.py, `Finite`).
LARGEST = 1e300


@dataclass(frozen=True)
class Number:
    """A finite number (an integer is taken as one) within [low, high], and never beyond
    ±LARGEST."""

    low: float = -LARGEST
    high: float = LARGEST


@dataclass(frozen=True)
class Whole:
    """An integer within [low, high] (a boolean is not one)."""

    low: int = -(2**63)
    high: int = 2**63 - 1


@dataclass(frozen=True)
class Text:
    """A string of 1 to `max_length` characters; one of `choices` if there are any."""

    max_length: int = 64
    choices: tuple[str, ...] = ()


FieldType = Number | Whole | Text


@dataclass(frozen=True)
class InputSpec:
    """A message type players may send, besides the zone's own (join, travel, ping,
    resync). Every input also carries `seq`, the client's increasing input number,
    shared by all its inputs. Each tick takes at most `per_tick` of a player's inputs of
    this type, in arrival order; the rest wait, at most `queued` of them (past that one
    is dropped, and never acknowledged)."""

    kind: str
    fields: tuple[tuple[str, FieldType], ...]
    per_tick: int = 4
    queued: int = 16


# The zone's own messages, which no game's input may be named as, and the keys of a
# player's entry in snapshots, which no replicated field may be named as
# (docs/protocol.md, "Outpost, the game's inputs").
ZONE_MESSAGES = ("join", "travel", "ping", "resync", "renew")
ENTRY_KEYS = ("eid", "id", "name", "x", "y", "seq")
MOST_FIELDS = 11  # replicated fields: a v2 entry [eid, x, y, seq, ...] is a fixarray
LONGEST_TEXT = 200  # an input's text: what messages between processes carry

# Moving: the one input every game shown here has; a move by (dx, dy).
MOVE = InputSpec("move", (("dx", Number()), ("dy", Number())))


class Input:
    """One input of one player, validated, as the rules are handed it: its `values` are
    in the order of its spec's fields, and `player` is who sent it (set by the zone)."""

    __slots__ = ("index", "kind", "player", "seq", "values")

    def __init__(self, kind: str, seq: int, values: tuple[Scalar, ...]) -> None:
        self.kind = kind
        self.seq = seq
        self.values = values
        self.player: Player | None = None  # the zone's bookkeeping, as queued:
        self.index = -1  # the input type's, among the rules' inputs


# --- who plays --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """A replicated per-player field: its name in snapshots, and its value for a player
    who just joined (which also says its type: bool, int, float or str)."""

    name: str
    default: Scalar


@dataclass(frozen=True)
class Profile:
    """What the services know of a character as it joins (the character service and the
    player's progression): fixed while it is in the zone."""

    character_class: str = "recruit"
    level: int = 1
    weapons: tuple[str, ...] = ()


DEFAULT_PROFILE = Profile()


class Player:
    """A character in the zone. The rules move it (`x`, `y`), set its replicated fields
    (`set`) and keep what they like in `data` (theirs alone, never sent). `seq` is the
    last input of its the zone has handed the rules: snapshots acknowledge it."""

    __slots__ = ("_specs", "budget", "changed_at", "character_id", "data", "eid", "fields",
                 "held_at", "moved_at", "name", "present", "profile", "px", "py", "queued",
                 "seq", "taken", "taken_at", "user_id", "x", "y")

    def __init__(self, character_id: str, user_id: str, name: str, x: float, y: float, *,
                 profile: Profile = DEFAULT_PROFILE, fields: tuple[Field, ...] = ()) -> None:
        self.character_id = character_id
        self.user_id = user_id
        self.name = name
        self.x, self.y = x, y
        self.profile = profile
        self.seq = 0
        self.eid = -1  # given by the zone that holds it
        self.present = True  # False once it has left: its queued inputs are dropped
        self._specs = fields  # the rules' own tuple: shared, as a zone holds thousands
        self.fields: list[Scalar] = [f.default for f in fields]  # in the rules' order
        self.data: dict[str, Any] = {}
        # The zone's bookkeeping: inputs waiting, changes (rules/motion.py's budget too).
        self.queued: deque[Input] = deque()
        self.held_at = -1  # the last tick an input of its was carried over to the next
        self.taken: list[int] = []  # inputs taken in tick `taken_at`, per input type
        self.taken_at = -1
        self.changed_at = -1  # the last tick it was marked changed in
        self.moved_at = -1  # the last tick whose motion budget `budget` is
        self.budget = 0.0
        self.px, self.py = x, y  # where it was at the end of the last tick

    def _index(self, name: str) -> int:
        for i, spec in enumerate(self._specs):  # a game has a few fields: no dict needed
            if spec.name == name:
                return i
        raise KeyError(name)

    def get(self, name: str) -> Scalar:
        return self.fields[self._index(name)]

    def set(self, name: str, value: Scalar) -> None:
        """Set a replicated field (the zone sends it with the player's next entry: mark
        the player changed with `Step.changed`)."""
        self.fields[self._index(name)] = value


# --- what happens -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """Something players see happen (a hit, a death): it reaches, in the tick it happened,
    every player who can see one of the players it is `about`."""

    kind: str
    about: tuple[Player, ...]
    data: Mapping[str, Scalar]


@dataclass(frozen=True)
class Fact:
    """Something that leaves the zone on the bus (JetStream), announced once: `id` is its
    message id, so that a publish retried after a NATS hiccup is not doubled."""

    subject: str
    id: str
    data: Mapping[str, Scalar]


@dataclass(frozen=True)
class Refusal:
    """An input the rules would not take: its sender gets an `error` with this code."""

    player: Player
    seq: int
    code: str
    message: str


@dataclass(frozen=True)
class Setup:
    """What the operator chose for the game (server/config.py): a game's rules are made
    with it, `Game(setup)`, and take what they use."""

    max_step: float = 5.0  # WORLD_MAX_STEP: the longest path a player may move in a tick
    map_path: str = ""  # WORLD_MAP: a map file (the shooter's walls and spawn points)
    max_rewind_s: float = 0.2  # WORLD_MAX_REWIND_MS: how far back a shot may be judged
    respawn_s: float = 3.0  # WORLD_RESPAWN_S: how long the dead stay dead


@dataclass(frozen=True)
class Zone:
    """The zone a game is started in."""

    zone_id: str
    bounds: tuple[float, float, float, float]  # min_x, min_y, max_x, max_y
    tick_rate_hz: float
    seed: int  # of `Step.rng`: the same seed and inputs, the same match


class Past(Protocol):
    """Where players were at ticks gone by (the zone keeps `Rules.history_ticks` of them)."""

    def position(self, player: Player, tick: int) -> tuple[float, float]:
        """Where `player` was at the end of `tick` (where it is now if it has not moved
        since; for a tick older than the zone keeps, the oldest position it keeps)."""


@dataclass
class Step:
    """One fixed step: its tick, the tick's inputs, and what the rules say happened."""

    tick: int
    dt: float  # seconds a tick lasts
    inputs: list[Input]  # this tick's, in arrival order (each with its `player`)
    players: Mapping[str, Player]  # every player in the zone, by character id
    rng: random.Random
    past: Past
    changed_players: list[Player] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def changed(self, player: Player) -> None:
        """`player` moved or a field of it changed: its entry goes out this tick."""
        if player.changed_at != self.tick:
            player.changed_at = self.tick
            self.changed_players.append(player)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def publish(self, fact: Fact) -> None:
        self.facts.append(fact)

    def refuse(self, player: Player, input: Input, code: str, message: str) -> None:
        self.refusals.append(Refusal(player, input.seq, code, message))


class Rules(Protocol):
    """A game, as a zone runs it (docs/rules.md): made with the operator's `Setup`, one
    for each zone. `inputs` and `fields` are fixed once the rules are made (an api process
    reads them from rules it never starts); `history_ticks` is read after `start`."""

    inputs: tuple[InputSpec, ...]
    fields: tuple[Field, ...]
    history_ticks: int  # ticks of past positions the zone keeps (lag compensation)

    def start(self, zone: Zone) -> None:
        """Once, before anyone joins."""

    def join(self, player: Player, tick: int) -> None:
        """`player` enters at its saved position (its fields at their defaults): place it,
        set its fields."""

    def leave(self, player: Player) -> None:
        """`player` left (it is saved where it is)."""

    def step(self, step: Step) -> None:
        """One fixed step: take the tick's inputs, change players, say what happened."""


def checked(spec: InputSpec, body: Mapping[str, object]) -> tuple[Scalar, ...] | str:
    """The values of an input of `spec` in `body` (a client's message, or an input another
    process relays), in the order of its fields; or why they are not valid."""
    values: list[Scalar] = []
    for name, kind in spec.fields:
        value = body.get(name)
        if isinstance(kind, Number):
            if type(value) is not float and type(value) is not int:
                return f"{name} must be a number"
            number = float(value)
            if not max(kind.low, -LARGEST) <= number <= min(kind.high, LARGEST):  # NaN too
                return f"{name} must be a finite number from {kind.low:g} to {kind.high:g}"
            values.append(number)
        elif isinstance(kind, Whole):
            if type(value) is not int or not kind.low <= value <= kind.high:
                return f"{name} must be an integer from {kind.low} to {kind.high}"
            values.append(value)
        else:
            if not isinstance(value, str) or not 1 <= len(value) <= kind.max_length:
                return f"{name} must be a string of 1 to {kind.max_length} characters"
            if kind.choices and value not in kind.choices:
                return f"{name} must be one of {', '.join(kind.choices)}"
            values.append(value)
    return tuple(values)
