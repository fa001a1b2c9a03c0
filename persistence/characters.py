"""The character service's store: characters.characters."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from persistence.errors import Conflict
from persistence.outbox import OutboxEvent, add_event


@dataclass(frozen=True)
class Character:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    class_: str
    zone_id: str
    x: float
    y: float
    active: bool
    created_at: datetime


_COLUMNS = "id, user_id, name, class, zone_id, x, y, active, created_at"


def _character(row: asyncpg.Record) -> Character:
    return Character(row["id"], row["user_id"], row["name"], row["class"], row["zone_id"],
                     row["x"], row["y"], row["active"], row["created_at"])


async def insert_character(
    conn: asyncpg.Connection, character: Character, *, limit: int,
    announce: Callable[[Character], OutboxEvent],
) -> Character:
    """Insert within the per-user limit and queue its event, in the caller's transaction."""
    # Serialise one user's creates so two at once cannot both pass the limit check.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                       str(character.user_id))
    count = await conn.fetchval(
        "SELECT count(*) FROM characters.characters WHERE user_id = $1", character.user_id
    )
    if count >= limit:
        raise Conflict(f"a user has at most {limit} characters", fields={"name": "limit_reached"})
    try:
        row = await conn.fetchrow(
            f"INSERT INTO characters.characters (id, user_id, name, name_key, class, zone_id)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            character.id, character.user_id, character.name, character.name.casefold(),
            character.class_, character.zone_id,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("you already have a character with that name",
                       fields={"name": "taken"}) from None
    created = _character(row)
    await add_event(conn, announce(created))
    return created


async def list_characters(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[Character]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM characters.characters WHERE user_id = $1 ORDER BY ordinal",
        user_id,
    )
    return [_character(r) for r in rows]
