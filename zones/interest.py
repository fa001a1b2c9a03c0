"""Who sees whom in a zone, and the snapshot each view gets (docs/protocol.md,
"Interest management" and "World, protocol v2"). Sans-IO.

A player sees the players of its block (zones/grid.py). `Interest` holds the zone's
entities (eid, character, position, last seq, the game's replicated fields, cell, and
their encoded entries) and what changed since the last tick: entries, moves and
leaves land in the current window, and `seal(tick)` closes it, with the tick's events
(rules/api.py, `Event`). The members of one block share one `View` of the sealed tick,
and a view encodes each of its forms at most once: v1 JSON, v2 complete, v2 delta
against the tick before, and the events about someone in the block. Those are joins
of runs that each cell encodes once a tick, so a tick costs in proportion to the
players and what they see, never to players squared.

A zone feeds its Interest from its simulation; another process holds a mirror of
it, fed from the zone's own feed (`feed`; zones/mirror.py), and serves its sessions
the same views (zones/remote.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from rules.api import Player
from zones.contract import FEED_VERSION
from zones.grid import Cell, Grid
from zones.snapshots import (
    EMPTY,
    Headers,
    Run,
    Scalar,
    enter_entry,
    events_message,
    pack_xy32,
    packed,
    scalars,
    short_uint,
    text,
    uint,
    update_entry,
    update_head,
    v1_entry,
)

V1, V2 = "v1", "v2"  # the wire a member speaks (docs/protocol.md)
Base = tuple[object, int]  # the view and tick of the last snapshot a member was sent
# An event of the sealed tick: its kind, the eids it is about, what it says.
TickEvent = tuple[str, Sequence[int], Mapping[str, Scalar]]


class Entity:
    """One character in the zone, as snapshots show it."""

    __slots__ = (
        "_exact",
        "_names",
        "_v1",
        "cell",
        "character_id",
        "eid",
        "enter",
        "fields",
        "head",
        "key",
        "name",
        "seq",
        "tail",
        "update",
        "x",
        "y",
    )

    def __init__(self, eid: int, character_id: str, name: str, x: float, y: float, seq: int,
                 cell: Cell, names: tuple[str, ...] = (),
                 fields: tuple[Scalar, ...] = ()) -> None:
        self.eid = eid
        self.key = uint(eid)
        self._names = names  # of the game's replicated fields
        self.head = update_head(eid, len(names))
        self.character_id = character_id
        self.name = name
        self.x, self.y, self.seq = x, y, seq
        self.fields = fields
        self.tail = scalars(fields)  # the fields, encoded
        self.cell = cell
        self.enter = enter_entry(self.key, character_id, name)
        self.update = b""  # written when its window is sealed
        self._exact: bytes | None = None
        self._v1: bytes | None = None

    def set_fields(self, fields: tuple[Scalar, ...]) -> None:
        if fields != self.fields:
            self.fields = fields
            self.tail = scalars(fields)

    @property
    def exact(self) -> bytes:
        if self._exact is None:
            self._exact = update_entry(self.head, self.x, self.y, self.seq,
                                       exact=True) + self.tail
        return self._exact

    @property
    def v1(self) -> bytes:
        if self._v1 is None:
            self._v1 = v1_entry(self.character_id, self.name, self.x, self.y, self.seq,
                                dict(zip(self._names, self.fields, strict=True)))
        return self._v1


class _Runs:
    """One cell's entries, each form joined once (when first asked for) until the cell
    changes."""

    __slots__ = ("_enter", "_entities", "_update", "_v1")

    def __init__(self, entities: Sequence[Entity]) -> None:
        self._entities = entities
        self._enter: Run | None = None
        self._update: Run | None = None
        self._v1: bytes | None = None

    @property
    def enter(self) -> Run:
        if self._enter is None:
            self._enter = Run.of([e.enter for e in self._entities])
        return self._enter

    @property
    def update(self) -> Run:
        if self._update is None:
            self._update = Run.of([e.update for e in self._entities])
        return self._update

    @property
    def v1(self) -> bytes:
        if self._v1 is None:
            self._v1 = b",".join(e.v1 for e in self._entities)
        return self._v1


class Interest:
    def __init__(self, zone_id: str, grid: Grid, *, epoch: object,
                 fields: tuple[str, ...] = ()) -> None:
        self.zone_id = zone_id
        self.grid = grid
        self.fields = fields  # the names of the game's replicated fields, in its order
        self.epoch = epoch  # tells this zone's snapshots from another run's (ticks restart)
        self.tick = 0  # the tick sealed last
        self.entities: dict[int, Entity] = {}  # as of now, the open window included
        # Who is in each cell as of the sealed tick: what views are built of, whenever a
        # member's outlet gets round to encoding one. The window's entries and leaves land
        # here when it is sealed (a complete snapshot encoded between a join and the next
        # seal once listed an entrant whose update entry was not written yet: a payload
        # one entry short, which no client can decode).
        self._cells: dict[Cell, dict[int, Entity]] = defaultdict(dict)
        self._entering: dict[int, Entity] = {}  # this window's entrants, in no cell yet
        self._leaving: list[Entity] = []  # this window's leavers, in their cells still
        self._headers = Headers(zone_id)
        self._touched: dict[int, Cell | None] = {}  # this window: eid -> cell it began in
        # The sealed tick: what changed in it, and what has been built of it.
        self._changed: dict[Cell, list[Entity]] = {}
        self._moves: list[tuple[int, Entity | None, Cell | None, Cell | None]] = []
        self._runs: dict[Cell, _Runs] = {}  # kept across ticks until a cell changes
        self._changed_runs: dict[Cell, Run] = {}
        self._block_moves: dict[Cell, tuple[list[Entity], list[int]]] | None = None
        self._views: dict[Cell, View] = {}
        self._events: Sequence[TickEvent] = ()  # the sealed tick's
        self._block_events: dict[Cell, list[int]] | None = None

    # --- the window ------------------------------------------------------------------------

    def enter(self, eid: int, character_id: str, name: str, x: float, y: float,
              seq: int, fields: tuple[Scalar, ...] = ()) -> None:
        entity = Entity(eid, character_id, name, x, y, seq, self.grid.cell(x, y),
                        self.fields, fields)
        self.entities[eid] = entity
        self._entering[eid] = entity
        self._touched.setdefault(eid, None)

    def update(self, eid: int, x: float, y: float, seq: int,
               fields: tuple[Scalar, ...] = ()) -> None:
        """A mirror's update (zones/mirror.py), which seals at once: so an entity may
        change cells here, with no view built between."""
        entity = self.entities[eid]
        if eid not in self._touched:
            self._touched[eid] = entity.cell
        entity.x, entity.y, entity.seq = x, y, seq
        entity.set_fields(fields)
        cell = self.grid.cell(x, y)
        if eid in self._entering:
            entity.cell = cell
        elif cell != entity.cell:
            self._move(entity, cell)

    def _move(self, entity: Entity, cell: Cell) -> None:
        was = self._cells[entity.cell]
        del was[entity.eid]
        if not was:
            del self._cells[entity.cell]
        self._cells[cell][entity.eid] = entity
        entity.cell = cell

    def leave(self, eid: int) -> None:
        entity = self.entities.pop(eid)
        self._touched.setdefault(eid, entity.cell)
        if self._entering.pop(eid, None) is None:
            self._leaving.append(entity)

    def _settle_window(self) -> None:
        """The window's leavers leave their cells and its entrants enter theirs."""
        cells = self._cells
        for entity in self._leaving:
            cell = cells[entity.cell]
            if cell.get(entity.eid) is entity:  # not an entrant given its eid since
                del cell[entity.eid]
                if not cell:
                    del cells[entity.cell]
        for entity in self._entering.values():
            cells[entity.cell][entity.eid] = entity
        self._leaving, self._entering = [], {}

    def seal(self, tick: int, moved: Sequence[Player] = (),
             events: Sequence[TickEvent] = ()) -> None:
        """Close the window: everything since the last seal happened in `tick`, and so
        did the changes of `moved` (update() for each, done here in the same loop: this
        is the zone's every tick, written for speed; it encodes the entry of every player
        that changed) and `events`."""
        self._settle_window()
        changed: dict[Cell, list[Entity]] = {}
        moves: list[tuple[int, Entity | None, Cell | None, Cell | None]] = []
        entities, runs, touched, grid = self.entities, self._runs, self._touched, self.grid
        radius, min_x, min_y = grid.radius, grid.min_x, grid.min_y
        columns, rows = grid.columns, grid.rows
        fielded = bool(self.fields)
        pack_xy = pack_xy32  # a local: compiled, a global is looked up at every call
        for one in moved:
            eid = one.eid
            entity = entities[eid]
            # Mostly empty (it holds the window's enters, leaves and a mirror's updates):
            # asked first, as an eid is looked up boxed.
            was = touched.pop(eid) if touched and eid in touched else entity.cell
            x = entity.x = one.x
            y = entity.y = one.y
            seq = entity.seq = one.seq
            if fielded:
                entity.set_fields(tuple(one.fields))
            now = entity.cell
            if radius:
                column, row = int((x - min_x) / radius), int((y - min_y) / radius)
                cell = row * columns + column if 0 <= column < columns and 0 <= row < rows \
                    else grid.cell(x, y)
                if cell != now:
                    self._move(entity, cell)
                    now = cell
            entity.update = entity.head + pack_xy(0xCA, x, 0xCA, y) + short_uint(seq) \
                + entity.tail
            entity._exact = entity._v1 = None
            in_cell = changed.get(now)
            if in_cell is None:
                changed[now] = [entity]
            else:
                in_cell.append(entity)
            if was != now:
                moves.append((eid, entity, was, now))
                if was is not None:
                    runs.pop(was, None)
        for eid, was in touched.items():  # the window's enters, leaves and other updates
            present = entities.get(eid)
            if present is None:
                if was is not None:  # left (not one that came and went in the window)
                    moves.append((eid, None, was, None))
                    runs.pop(was, None)
                continue
            present.update = update_entry(present.head, present.x, present.y,
                                          present.seq) + present.tail
            present._exact = present._v1 = None
            now = present.cell
            changed.setdefault(now, []).append(present)
            if was != now:
                moves.append((eid, present, was, now))
                if was is not None:
                    runs.pop(was, None)
        for cell in changed:
            runs.pop(cell, None)
        self.tick = tick
        self._touched = {}
        self._changed, self._moves = changed, moves
        self._changed_runs, self._block_moves, self._views = {}, None, {}
        self._events, self._block_events = events, None

    # --- what members see ------------------------------------------------------------------

    def view(self, cell: Cell) -> View:
        """The view of the block around `cell` at the sealed tick."""
        found = self._views.get(cell)
        if found is None:
            found = self._views[cell] = View(self, cell)
        return found

    def cell_of(self, eid: int) -> Cell | None:
        entity = self.entities.get(eid)
        return None if entity is None else entity.cell

    def runs(self, cell: Cell) -> _Runs:
        found = self._runs.get(cell)
        if found is None:
            found = self._runs[cell] = _Runs(list(self._cells.get(cell, {}).values()))
        return found

    def changed_run(self, cell: Cell) -> Run:
        found = self._changed_runs.get(cell)
        if found is None:
            entities = self._changed.get(cell)
            found = self._changed_runs[cell] = Run.of([e.update for e in entities]) \
                if entities else EMPTY
        return found

    def block_moves(self, cell: Cell) -> tuple[list[Entity], list[int]]:
        """Who came into the block around `cell` this tick, and the eids that left it."""
        if self._block_moves is None:
            self._block_moves = defaultdict(lambda: ([], []))
            block = self.grid.block
            for eid, entity, was, now in self._moves:
                before = set(block(was)) if was is not None else set()
                after = set(block(now)) if now is not None else set()
                for center in after - before:
                    assert entity is not None
                    self._block_moves[center][0].append(entity)
                for center in before - after:
                    self._block_moves[center][1].append(eid)
        return self._block_moves.get(cell, ([], []))

    def events_in(self, cell: Cell) -> list[int]:
        """The sealed tick's events (their indexes) about someone a member in `cell` sees:
        about a player in a cell of its block (seeing is mutual: zones/grid.py)."""
        if not self._events:
            return []
        if self._block_events is None:
            self._block_events = defaultdict(list)
            block, entities = self.grid.block, self.entities
            for i, (_, about, _) in enumerate(self._events):
                cells = {entities[eid].cell for eid in about if eid in entities}
                for center in {c for cell in cells for c in block(cell)}:
                    self._block_events[center].append(i)
        return self._block_events.get(cell, [])

    def events_message(self, indexes: Sequence[int], wire: str) -> bytes:
        return events_message(wire == V1, self.zone_id, self.tick,
                              [{"kind": self._events[i][0], **self._events[i][2]}
                               for i in indexes])

    def v2(self, base: int | None, enter: Sequence[Run], update: Sequence[Run],
           leave: Sequence[int]) -> bytes:
        return self._headers.v2(self.tick, base, enter, update, leave)

    def v1(self, runs: Sequence[bytes]) -> bytes:
        return self._headers.v1(self.tick, runs)

    @property
    def occupied(self) -> Iterator[Cell]:
        return iter(self._cells)

    def members(self) -> Iterator[tuple[Cell, Iterable[int]]]:
        """Each occupied cell and the eids in it."""
        for cell, entities in self._cells.items():
            yield cell, entities.keys()

    # --- the zone's feed to other processes ------------------------------------------------

    def feed(self, *, complete: bool) -> bytes:
        """The whole zone at the sealed tick, for mirrors: v2's layout with exact
        positions and, first, the feed's version and the zone's epoch, a delta against
        the tick before or (`complete`) everything (zones/contract.py, `Feed`)."""
        if complete:
            everyone = list(self.entities.values())
            body = self.v2(None, [Run.of([e.enter for e in everyone])],
                           [Run.of([e.exact for e in everyone])], [])
        else:
            entered = [e for _, e, was, _ in self._moves if was is None and e is not None]
            left = [eid for eid, _, _, now in self._moves if now is None]
            changed = [Run.of([e.exact for e in cell]) for cell in self._changed.values()]
            body = self.v2(self.tick - 1, [Run.of([e.enter for e in entered])], changed, left)
        assert body[0] == 0x87 and isinstance(self.epoch, str)
        events = [[kind, list(about), dict(data)] for kind, about, data in self._events]
        return (b"\x8a\xa1v" + uint(FEED_VERSION) + text("epoch") + text(self.epoch)
                + body[1:] + text("events") + packed(events))

class Snapshot(Protocol):
    """What a member is handed each tick (a View, to the zones)."""

    zone: str

    def encoded(self, wire: str, since: Base | None) -> tuple[bytes, Base]:
        """The payload for a member that speaks `wire` and was last sent `since`, and
        what it will have been sent now."""

    def events(self, wire: str) -> bytes | None:
        """The `events` message of the tick for a member that speaks `wire`: the events
        about someone it sees; None when there are none."""


class View:
    """What the members of one block see at one tick, encoded once per form."""

    __slots__ = ("_after", "_block", "_cell", "_complete", "_delta", "_events", "_interest",
                 "_v1", "base", "tick", "zone")

    def __init__(self, interest: Interest, cell: Cell) -> None:
        self._interest = interest
        self.zone = interest.zone_id
        self._cell = cell
        self._block = interest.grid.block(cell)
        self.tick = interest.tick
        key = (interest.epoch, cell)
        self.base: Base = (key, self.tick)  # what a member has been sent once sent this
        self._after: Base = (key, self.tick - 1)  # what a member a delta is for was sent
        self._v1: bytes | None = None
        self._complete: bytes | None = None
        self._delta: bytes | None = None
        self._events: dict[str, bytes | None] = {}

    def encoded(self, wire: str, since: Base | None) -> tuple[bytes, Base]:
        """The payload for a member that speaks `wire` and was last sent `since`, and
        what it will have been sent now: a delta only against the tick just before,
        of this very block, else everything. A view asked for after a newer tick was
        sealed (a member behind on reading) is that newer tick's view: what the zone
        holds now is what it can encode, and it is news sooner."""
        if self.tick != self._interest.tick:
            return self._interest.view(self._cell).encoded(wire, since)
        if wire == V1:
            return self._v1 or self._encode_v1(), self.base
        if since == self._after:
            return self._delta or self._encode_delta(), self.base
        return self._complete or self._encode_complete(), self.base

    def events(self, wire: str) -> bytes | None:
        if wire not in self._events:
            indexes = self._interest.events_in(self._cell)
            self._events[wire] = self._interest.events_message(indexes, wire) if indexes \
                else None
        return self._events[wire]

    def _encode_v1(self) -> bytes:
        entries = [self._interest.runs(c).v1 for c in self._block]
        self._v1 = self._interest.v1([e for e in entries if e])
        return self._v1

    def _encode_delta(self) -> bytes:
        entered, left = self._interest.block_moves(self._cell)
        self._delta = self._interest.v2(
            self.tick - 1, [Run.of([e.enter for e in entered])],
            [self._interest.changed_run(c) for c in self._block], left)
        return self._delta

    def _encode_complete(self) -> bytes:
        runs = [self._interest.runs(c) for c in self._block]
        self._complete = self._interest.v2(None, [r.enter for r in runs],
                                           [r.update for r in runs], [])
        return self._complete
