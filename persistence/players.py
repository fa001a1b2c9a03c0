"""The player service's store: players.players."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from persistence.errors import NotProvisioned


@dataclass(frozen=True)
class Player:
    user_id: uuid.UUID
    username: str
    created_at: datetime
    kills: int = 0
    deaths: int = 0


async def provision_players(conn: asyncpg.Connection, players: list[Player]) -> None:
    """Create the players that do not exist: a redelivered event changes nothing."""
    await conn.executemany(
        "INSERT INTO players.players (user_id, username, created_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_id) DO NOTHING",
        [(p.user_id, p.username, p.created_at) for p in players],
    )


async def get_player(conn: asyncpg.Connection, user_id: uuid.UUID) -> Player | None:
    row = await conn.fetchrow(
        "SELECT user_id, username, created_at, kills, deaths FROM players.players"
        " WHERE user_id = $1", user_id)
    return Player(row["user_id"], row["username"], row["created_at"], row["kills"],
                  row["deaths"]) if row else None


Kill = tuple[uuid.UUID, uuid.UUID, uuid.UUID]  # a `combat.killed`: event, killer, victim


async def count_kills(conn: asyncpg.Connection, kills: list[Kill]) -> None:
    """Count each kill once (a kill for its killer, a death for its victim), however often
    its event is delivered: an event already counted changes nothing."""
    counted = {row["event_id"] for row in await conn.fetch(
        "INSERT INTO players.kills_counted (event_id) SELECT unnest($1::uuid[])"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id", [k[0] for k in kills])}
    for event_id, killer, victim in kills:
        if event_id in counted:
            counted.discard(event_id)  # a batch may hold one event twice
            for column, user_id in (("kills", killer), ("deaths", victim)):
                updated = await conn.execute(f"UPDATE players.players SET {column} ="
                                             f" {column} + 1 WHERE user_id = $1", user_id)
                if updated == "UPDATE 0":
                    raise NotProvisioned(f"no player {user_id} yet")
