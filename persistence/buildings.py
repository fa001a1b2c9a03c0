"""The building service's store: buildings.buildings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Building:
    kind: str
    level: int


# Every new base: its headquarters and a warehouse, in this order.
DEFAULT_BASE = (Building("hq", 1), Building("warehouse", 1))


async def provision_buildings(conn: asyncpg.Connection, user_ids: list[uuid.UUID]) -> None:
    """Add the default buildings each user does not have yet."""
    await conn.executemany(
        "INSERT INTO buildings.buildings (user_id, kind, level, ordinal) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (user_id, kind) DO NOTHING",
        [(user_id, b.kind, b.level, i) for user_id in user_ids
         for i, b in enumerate(DEFAULT_BASE)],
    )


async def list_buildings(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[Building]:
    rows = await conn.fetch(
        "SELECT kind, level FROM buildings.buildings WHERE user_id = $1 ORDER BY ordinal, kind",
        user_id)
    return [Building(r["kind"], r["level"]) for r in rows]
