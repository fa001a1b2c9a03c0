"""The player service's store: players.players."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class Player:
    user_id: uuid.UUID
    username: str
    created_at: datetime


async def provision_players(conn: asyncpg.Connection, players: list[Player]) -> None:
    """Create the players that do not exist: a redelivered event changes nothing."""
    await conn.executemany(
        "INSERT INTO players.players (user_id, username, created_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_id) DO NOTHING",
        [(p.user_id, p.username, p.created_at) for p in players],
    )


async def get_player(conn: asyncpg.Connection, user_id: uuid.UUID) -> Player | None:
    row = await conn.fetchrow(
        "SELECT user_id, username, created_at FROM players.players WHERE user_id = $1", user_id)
    return Player(row["user_id"], row["username"], row["created_at"]) if row else None
