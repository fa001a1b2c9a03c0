"""The shooter's map (`WORLD_MAP`, docs/rules.md): walls, axis-aligned boxes that stop
movement and shots, and the spawn points players respawn at. No file: an empty map,
with one spawn point at (0, 0).

    {"walls": [[min_x, min_y, max_x, max_y], ...], "spawns": [[x, y], ...]}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from rules.motion import Box


class _File(msgspec.Struct, forbid_unknown_fields=True):
    walls: list[tuple[float, float, float, float]] = msgspec.field(default_factory=list)
    spawns: list[tuple[float, float]] = msgspec.field(default_factory=lambda: [(0.0, 0.0)])


@dataclass(frozen=True)
class Map:
    walls: tuple[Box, ...] = ()
    spawns: tuple[tuple[float, float], ...] = ((0.0, 0.0),)


def read_map(path: str) -> Map:
    """The map in file `path` ("": the empty one); ValueError saying what is wrong."""
    if not path:
        return Map()
    try:
        found = msgspec.json.decode(Path(path).read_bytes(), type=_File)
    except (OSError, msgspec.DecodeError) as exc:
        raise ValueError(f"cannot read the map {path}: {exc}") from None
    walls = tuple(Box(*wall) for wall in found.walls)
    for box in walls:
        if not (box.min_x < box.max_x and box.min_y < box.max_y):
            raise ValueError(f"a wall of {path} is no box: {box}")
    if not found.spawns:
        raise ValueError(f"{path} has no spawn point")
    for x, y in found.spawns:
        if any(box.contains(x, y) for box in walls):
            raise ValueError(f"spawn point ({x}, {y}) of {path} is inside a wall")
    return Map(walls, tuple((float(x), float(y)) for x, y in found.spawns))
