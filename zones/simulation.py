"""A zone's simulation: its players, their inputs and the game's rules. Sans-IO: no trio.

The engine around a game's `Rules` (rules/api.py): inputs are queued in arrival order
and handed to the rules at the next tick, each tick at most an input type's
`per_tick` of a player's (the rest wait, in order; past `queued` waiting, one is
dropped). A player's `seq` becomes that of the last input handed to the rules: the
snapshots acknowledge it. The engine also keeps where players were for the rules'
`history_ticks` (lag compensation asks), and the players' eids.

Each player has an eid, the small number v2 snapshots know it by: the smallest free
one, and one that was freed is handed out again only after the tick in which its player
left (whose snapshots say so) has been stepped.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from rules.api import Event as RulesEvent
from rules.api import Fact, Input, Player, Refusal, Rules, Step, Zone


class Eids:
    """Small numbers for players: the smallest free first; a freed one rests a tick."""

    def __init__(self) -> None:
        self._next = 0
        self._free: list[int] = []
        self._resting: list[int] = []

    def take(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        self._next += 1
        return self._next - 1

    def give_back(self, eid: int) -> None:
        self._resting.append(eid)

    def wake(self) -> None:
        """The tick in which the resting eids were freed is over: they may be taken."""
        for eid in self._resting:
            heapq.heappush(self._free, eid)
        self._resting.clear()


class History:
    """Where players were, for the last `ticks` ticks: each tick, the positions its moves
    left (eid -> where it was at the end of the tick before, which a player keeps in
    `px`, `py`). A position at a past tick is the present one with the later moves
    undone."""

    def __init__(self, ticks: int) -> None:
        self._undo: deque[tuple[int, dict[int, tuple[float, float]]]] = deque(maxlen=ticks)
        self.tick = 0  # the tick being stepped

    def position(self, player: Player, tick: int) -> tuple[float, float]:
        if tick >= self.tick or not self._undo.maxlen:
            return player.x, player.y
        x, y = player.px, player.py  # at the end of the tick before this one
        for undone, moves in reversed(self._undo):
            if undone <= tick:
                break
            if player.eid in moves:
                x, y = moves[player.eid]
        return x, y

    def end(self, changed: list[Player]) -> None:
        """The tick's moves: what `changed` players' positions were before it."""
        if not self._undo.maxlen:
            return
        moves = {}
        for player in changed:
            x, y = player.x, player.y
            if (player.px, player.py) != (x, y):
                moves[player.eid] = (player.px, player.py)
                player.px, player.py = x, y
        self._undo.append((self.tick, moves))


@dataclass
class Stepped:
    """What one tick did, for the zone to send: who changed, what happened."""

    tick: int
    changed: list[Player]
    events: list[RulesEvent] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    fault: Exception | None = None  # what the rules raised, if they did: a bug of the game's


class Simulation:
    def __init__(self, rules: Rules, zone: Zone) -> None:
        self.zone_id = zone.zone_id
        self.rules = rules
        rules.start(zone)  # before its inputs, fields and history are read
        self.dt = 1 / zone.tick_rate_hz
        self._kinds = {spec.kind: i for i, spec in enumerate(rules.inputs)}
        self._per_tick = [spec.per_tick for spec in rules.inputs]
        self._queued = [spec.queued for spec in rules.inputs]
        self._single = len(rules.inputs) == 1  # the common game: inputs of one type
        self.tick = 0
        self.players: dict[str, Player] = {}
        self._arrivals: deque[Input] = deque()  # in arrival order
        self._eids = Eids()
        self._past = History(rules.history_ticks)
        self.rng = random.Random(zone.seed)
        self.inputs_applied = 0  # inputs handed to the rules since the start

    def add(self, player: Player) -> Player:
        """Place `player` (the rules do); a character already here keeps its state."""
        known = self.players.get(player.character_id)
        if known is not None:
            return known
        player.eid = self._eids.take()
        player.taken = [0] * len(self._per_tick)
        self.players[player.character_id] = player
        self.rules.join(player, self.tick)
        player.px, player.py = player.x, player.y  # where the rules placed it: its past too
        return player

    def remove(self, character_id: str) -> Player | None:
        player = self.players.pop(character_id, None)
        if player is not None:
            player.present = False
            self._eids.give_back(player.eid)
            self.rules.leave(player)
        return player

    def queue(self, character_id: str, input: Input) -> bool:
        """Queue an input for the next tick; False if dropped (not in the zone, an input
        type the rules do not have, or too many of its type waiting)."""
        player = self.players.get(character_id)
        kind = self._kinds.get(input.kind)
        if player is None or kind is None:
            return False
        queued, cap = player.queued, self._queued[kind]
        if len(queued) >= cap and (self._single or
                                   sum(1 for q in queued if q.kind == input.kind) >= cap):
            return False
        input.player, input.index = player, kind
        queued.append(input)
        self._arrivals.append(input)
        return True

    def step(self) -> Stepped:
        """Advance one tick: hand the rules this tick's inputs; what it did.

        Written for speed (it runs for thousands of inputs a second): the tick's count
        of each player's inputs lives on the player."""
        self.tick = tick = self.tick + 1
        per_tick = self._per_tick
        inputs: list[Input] = []
        carried: deque[Input] = deque()
        changed: list[Player] = []  # whose seq is acknowledged, whatever the rules do
        for input in self._arrivals:
            player, kind = input.player, input.index
            assert player is not None
            if not player.present:
                continue  # left the zone since
            taken = player.taken
            if player.taken_at != tick:
                player.taken_at = tick
                for i in range(len(taken)):
                    taken[i] = 0
            # A player's inputs are taken in arrival order: once one waits for the next
            # tick, all its later ones do.
            if taken[kind] >= per_tick[kind] or player.held_at == tick:
                carried.append(input)
                player.held_at = tick
                continue
            taken[kind] += 1
            player.queued.popleft()
            player.seq = input.seq
            inputs.append(input)
            if player.changed_at != tick:
                player.changed_at = tick
                changed.append(player)
        self._arrivals = carried
        self.inputs_applied += len(inputs)
        self._past.tick = tick
        step = Step(tick, self.dt, inputs, self.players, self.rng, self._past,
                    changed_players=changed)
        fault = None
        try:
            self.rules.step(step)
        except Exception as exc:  # the zone goes on: what the step did before it is kept
            fault = exc
        self._past.end(step.changed_players)
        self._eids.wake()
        return Stepped(tick, step.changed_players, step.events, step.facts, step.refusals,
                       fault)
