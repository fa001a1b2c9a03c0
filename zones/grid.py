"""The cells of a zone (docs/protocol.md, "Interest management"). Sans-IO.

The zone is cut into square cells whose side is the view radius; a player sees the
players of its own cell and of the eight around it (its block): everyone within the
radius, nobody farther than twice it on either axis. A radius of 0 makes the whole zone
one cell. Seeing is mutual: a cell is in another's block when that one is in its.
"""

from __future__ import annotations

Cell = int


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
