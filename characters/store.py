"""The character service's store: characters.characters."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

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


def cache_key(user_id: uuid.UUID | str) -> str:
    """The Redis key of the user's cached list; every write here must invalidate it."""
    return f"characters:user:{user_id}"


DEFAULT_NAME, DEFAULT_CLASS = "Recruit", "recruit"
# Default characters get ids derived from the user's, so a redelivered
# `user.registered` finds the one it made instead of making another.
_DEFAULT_IDS = uuid.UUID("5d0a3c1e-8f0b-4a57-9a43-0e6f0c3a7b21")


def default_character_id(user_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_DEFAULT_IDS, str(user_id))


async def _lock_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Serialise one user's writes here, so checks before an insert stay true."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", str(user_id))


async def _insert(conn: asyncpg.Connection, character: Character,
                  announce: Callable[[Character], OutboxEvent]) -> Character:
    """Insert `character` (the database stamps created_at) and queue its event."""
    try:
        row = await conn.fetchrow(
            f"INSERT INTO characters.characters"
            f" (id, user_id, name, name_key, class, zone_id, x, y, active)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}",
            character.id, character.user_id, character.name, character.name.casefold(),
            character.class_, character.zone_id, character.x, character.y, character.active,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("you already have a character with that name",
                       fields={"name": "taken"}) from None
    created = _character(row)
    await add_event(conn, announce(created))
    return created


async def insert_character(
    conn: asyncpg.Connection, character: Character, *, limit: int,
    announce: Callable[[Character], OutboxEvent],
) -> Character:
    """Insert within the per-user limit and queue its event, in the caller's transaction."""
    await _lock_user(conn, character.user_id)  # two creates at once cannot both pass the limit
    count = await conn.fetchval(
        "SELECT count(*) FROM characters.characters WHERE user_id = $1", character.user_id
    )
    if count >= limit:
        raise Conflict(f"a user has at most {limit} characters", fields={"name": "limit_reached"})
    return await _insert(conn, character, announce)


async def provision_default_characters(
    conn: asyncpg.Connection, user_ids: list[uuid.UUID], *, zone_id: str,
    announce: Callable[[Character], OutboxEvent],
) -> list[Character]:
    """Give each new user "Recruit", active, unless it has it already; returns the
    characters made now. It is the account's grant: it does not count against the limit."""
    created = []
    for user_id in sorted(set(user_ids)):  # one lock order, so two batches cannot deadlock
        await _lock_user(conn, user_id)
        character_id = default_character_id(user_id)
        if await conn.fetchval("SELECT 1 FROM characters.characters WHERE id = $1",
                               character_id):
            continue
        mine = await conn.fetch(
            "SELECT name_key, active FROM characters.characters WHERE user_id = $1", user_id)
        # The user may have made characters before this event arrived, even a "Recruit".
        taken = {r["name_key"] for r in mine}
        name = next(n for n in (DEFAULT_NAME, *(f"{DEFAULT_NAME} {i}" for i in range(2, 100)))
                    if n.casefold() not in taken)
        active = not any(r["active"] for r in mine)
        created.append(await _insert(conn, Character(
            character_id, user_id, name, DEFAULT_CLASS, zone_id, 0.0, 0.0, active,
            datetime.now(UTC)), announce))
    return created


async def active_character_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM characters.characters WHERE user_id = $1 AND active", user_id)
    return found


async def list_characters(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[Character]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM characters.characters WHERE user_id = $1 ORDER BY ordinal",
        user_id,
    )
    return [_character(r) for r in rows]


async def get_character(conn: asyncpg.Connection, character_id: uuid.UUID) -> Character | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM characters.characters WHERE id = $1",
                              character_id)
    return _character(row) if row else None


async def update_positions(conn: asyncpg.Connection,
                           positions: list[tuple[uuid.UUID | str, str, float, float]]) -> None:
    """Save (id, zone_id, x, y) of characters leaving or checkpointed by their zone; a
    character that has travelled to another zone since keeps the row travel wrote."""
    await conn.executemany(
        "UPDATE characters.characters SET x = $3, y = $4 WHERE id = $1 AND zone_id = $2",
        positions)


async def move_to_zone(conn: asyncpg.Connection, character_id: uuid.UUID, zone_id: str,
                       x: float, y: float) -> None:
    """Travel: the character is in `zone_id` at (x, y) from now on."""
    await conn.execute(
        "UPDATE characters.characters SET zone_id = $2, x = $3, y = $4 WHERE id = $1",
        character_id, zone_id, x, y)
