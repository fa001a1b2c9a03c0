"""Who sees whom in a zone, and the snapshot each view gets (docs/protocol.md,
"Interest management" and "World, protocol v2"). Sans-IO.

The zone is cut into square cells whose side is the view radius; a player sees the
players of its own cell and of the eight around it (its block), so everyone within
the radius and nobody farther than twice it on either axis. A radius of 0 makes the
whole zone one cell: everyone sees everyone.

`Interest` holds the zone's entities (eid, character, position, last seq, cell, and
their encoded entries) and what changed since the last tick: entries, moves and
leaves land in the current window, and `seal(tick)` closes it. The members of one
block share one `View` of the sealed tick, and a view encodes each of its forms at
most once: v1 JSON, v2 complete, v2 delta against the tick before. Those are joins
of runs that each cell encodes once a tick, so a tick costs in proportion to the
players and what they see, never to players squared.

A zone feeds its Interest from its simulation; another process holds a mirror of
it, fed from the zone's own feed (`feed`, then `apply`), and serves its sessions
the same views (zones/remote.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from zones.contract import FEED_VERSION, Feed
from zones.simulation import Avatar
from zones.snapshots import (
    EMPTY,
    Headers,
    Run,
    enter_entry,
    pack_xy32,
    short_uint,
    text,
    uint,
    update_entry,
    update_head,
    v1_entry,
)

Cell = int
V1, V2 = "v1", "v2"  # the wire a member speaks (docs/protocol.md)
Base = tuple[object, int]  # the view and tick of the last snapshot a member was sent


class Grid:
    """Cells of side `radius` over the zone's bounds; radius 0 is a single cell."""

    def __init__(self, min_x: float, min_y: float, max_x: float, max_y: float,
                 radius: float) -> None:
        self.min_x, self.min_y, self.radius = min_x, min_y, radius
        self.columns = int((max_x - min_x) / radius) + 1 if radius else 1
        self.rows = int((max_y - min_y) / radius) + 1 if radius else 1
        self._blocks: dict[Cell, tuple[Cell, ...]] = {}

    def cell(self, x: float, y: float) -> Cell:
        radius = self.radius
        if not radius:
            return 0
        column = int((x - self.min_x) / radius)
        row = int((y - self.min_y) / radius)
        columns = self.columns
        if 0 <= column < columns and 0 <= row < self.rows:
            return row * columns + column
        return min(max(row, 0), self.rows - 1) * columns + min(max(column, 0), columns - 1)

    def block(self, cell: Cell) -> tuple[Cell, ...]:
        """The cells a player in `cell` sees, its own first."""
        found = self._blocks.get(cell)
        if found is None:
            columns, rows = self.columns, self.rows
            row, column = divmod(cell, columns)
            around = [r * columns + c for r in range(max(row - 1, 0), min(row + 2, rows))
                      for c in range(max(column - 1, 0), min(column + 2, columns))]
            found = self._blocks[cell] = (cell, *(c for c in around if c != cell))
        return found


class Entity:
    """One character in the zone, as snapshots show it."""

    __slots__ = (
        "_exact",
        "_v1",
        "cell",
        "character_id",
        "eid",
        "enter",
        "head",
        "key",
        "name",
        "seq",
        "update",
        "x",
        "y",
    )

    def __init__(self, eid: int, character_id: str, name: str, x: float, y: float, seq: int,
                 cell: Cell) -> None:
        self.eid = eid
        self.key = uint(eid)
        self.head = update_head(eid)
        self.character_id = character_id
        self.name = name
        self.x, self.y, self.seq = x, y, seq
        self.cell = cell
        self.enter = enter_entry(self.key, character_id, name)
        self.update = b""  # written when its window is sealed
        self._exact: bytes | None = None
        self._v1: bytes | None = None

    @property
    def exact(self) -> bytes:
        if self._exact is None:
            self._exact = update_entry(self.head, self.x, self.y, self.seq, exact=True)
        return self._exact

    @property
    def v1(self) -> bytes:
        if self._v1 is None:
            self._v1 = v1_entry(self.character_id, self.name, self.x, self.y, self.seq)
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
    def __init__(self, zone_id: str, grid: Grid, *, epoch: object) -> None:
        self.zone_id = zone_id
        self.grid = grid
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

    # --- the window ------------------------------------------------------------------------

    def enter(self, eid: int, character_id: str, name: str, x: float, y: float,
              seq: int) -> None:
        entity = Entity(eid, character_id, name, x, y, seq, self.grid.cell(x, y))
        self.entities[eid] = entity
        self._entering[eid] = entity
        self._touched.setdefault(eid, None)

    def update(self, eid: int, x: float, y: float, seq: int) -> None:
        """A mirror's update (`apply`), which seals at once: so an entity may change cells
        here, with no view built between."""
        entity = self.entities[eid]
        if eid not in self._touched:
            self._touched[eid] = entity.cell
        entity.x, entity.y, entity.seq = x, y, seq
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

    def seal(self, tick: int, moved: Sequence[Avatar] = ()) -> None:
        """Close the window: everything since the last seal happened in `tick`, and so
        did the moves of `moved` (update() for each, done here in the same loop: this is
        the zone's every tick, written for speed; it encodes the entry of every player
        that moved)."""
        self._settle_window()
        changed: dict[Cell, list[Entity]] = {}
        moves: list[tuple[int, Entity | None, Cell | None, Cell | None]] = []
        entities, runs, touched, grid = self.entities, self._runs, self._touched, self.grid
        radius, min_x, min_y = grid.radius, grid.min_x, grid.min_y
        columns, rows = grid.columns, grid.rows
        for one in moved:
            eid = one.eid
            entity = entities[eid]
            was = touched.pop(eid) if eid in touched else entity.cell
            x = entity.x = one.x
            y = entity.y = one.y
            seq = entity.seq = one.seq
            now = entity.cell
            if radius:
                column, row = int((x - min_x) / radius), int((y - min_y) / radius)
                cell = row * columns + column if 0 <= column < columns and 0 <= row < rows \
                    else grid.cell(x, y)
                if cell != now:
                    self._move(entity, cell)
                    now = cell
            entity.update = entity.head + pack_xy32(0xCA, x, 0xCA, y) + short_uint(seq)
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
            present.update = update_entry(present.head, present.x, present.y, present.seq)
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
        return b"\x89\xa1v" + uint(FEED_VERSION) + text("epoch") + text(self.epoch) + body[1:]

    def apply(self, feed: Feed) -> bool:
        """Take a tick of the zone's feed (decoded); False if it is a delta against a tick
        this mirror does not hold (wait for the next complete one). A feed that does not
        hold together (another zone's, an update of an eid nobody entered) raises
        ValueError before anything is changed."""
        epoch, tick, base = feed.epoch, feed.tick, feed.base
        enter, update, leave = feed.enter, feed.update, feed.leave
        if base is not None and (epoch != self.epoch or base != self.tick):
            return False
        names = {eid: (character_id, name) for eid, character_id, name in enter}
        held = set() if base is None and epoch != self.epoch else set(self.entities)
        held.difference_update(leave)
        unknown = [entry[0] for entry in update if entry[0] not in names
                   and entry[0] not in held]
        # An eid that leaves and enters in one tick: no delta could tell its viewers (the
        # zone rests a freed eid for a tick so that it never happens).
        reused = names.keys() & set(leave)
        if feed.zone != self.zone_id or unknown or reused:
            raise ValueError(f"a feed of zone {feed.zone!r} that updates unknown eids "
                             f"{unknown[:5]} or reuses eids {sorted(reused)[:5]}")
        if base is None:
            if epoch != self.epoch:  # another run of the zone: start afresh
                for eid in list(self.entities):
                    self.leave(eid)
                self.epoch = epoch
            present = {entry[0] for entry in update}
            for eid in [eid for eid in self.entities if eid not in present]:
                self.leave(eid)
        for eid in leave:
            if eid in self.entities:
                self.leave(eid)
        for eid, x, y, seq in update:
            known = self.entities.get(eid)
            if known is not None and eid in names and known.character_id != names[eid][0]:
                self.leave(eid)  # its eid was given to another character meanwhile
                known = None
            if known is None:
                character_id, name = names[eid]
                self.enter(eid, character_id, name, x, y, seq)
            elif (known.x, known.y, known.seq) != (x, y, seq):
                self.update(eid, x, y, seq)
        self.seal(tick)
        return True


class Snapshot(Protocol):
    """What a member is handed each tick (a View, to the zones)."""

    zone: str

    def encoded(self, wire: str, since: Base | None) -> tuple[bytes, Base]:
        """The payload for a member that speaks `wire` and was last sent `since`, and
        what it will have been sent now."""


class View:
    """What the members of one block see at one tick, encoded once per form."""

    __slots__ = ("_after", "_block", "_cell", "_complete", "_delta", "_interest", "_v1",
                 "base", "tick", "zone")

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
