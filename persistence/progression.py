"""The progression service's store: progression.progressions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from persistence.errors import NotProvisioned


@dataclass(frozen=True)
class Progression:
    level: int
    xp: int
    weapons: tuple[str, ...]
    skills: tuple[str, ...]


# What every new account starts with (docs/protocol.md, "GET /v1/me"): the pistol, and
# one skill for each mode of play: sprint (moving), first_aid (fighting), fortify (building).
STARTING = Progression(level=1, xp=0, weapons=("pistol",),
                       skills=("sprint", "first_aid", "fortify"))


async def provision_progressions(conn: asyncpg.Connection, user_ids: list[uuid.UUID]) -> None:
    """Give each user the starting progression unless it has one already."""
    await conn.executemany(
        "INSERT INTO progression.progressions (user_id, level, xp, weapons, skills)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO NOTHING",
        [(user_id, STARTING.level, STARTING.xp, list(STARTING.weapons), list(STARTING.skills))
         for user_id in user_ids],
    )


async def get_progression(conn: asyncpg.Connection, user_id: uuid.UUID) -> Progression | None:
    row = await conn.fetchrow(
        "SELECT level, xp, weapons, skills FROM progression.progressions WHERE user_id = $1",
        user_id)
    if row is None:
        return None
    return Progression(row["level"], row["xp"], tuple(row["weapons"]), tuple(row["skills"]))


XP_PER_KILL = 100
XP_PER_LEVEL = 1000  # level 1 + xp // this


async def award_kills(conn: asyncpg.Connection,
                      kills: list[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Award each killer (event id, killer's user id) XP_PER_KILL once per kill, however
    often its event is delivered, and the level its experience makes."""
    awarded = {row["event_id"] for row in await conn.fetch(
        "INSERT INTO progression.kills_awarded (event_id) SELECT unnest($1::uuid[])"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id", [k[0] for k in kills])}
    for event_id, killer in kills:
        if event_id in awarded:
            awarded.discard(event_id)  # a batch may hold one event twice
            updated = await conn.execute(
                "UPDATE progression.progressions SET xp = xp + $2,"
                " level = 1 + (xp + $2) / $3 WHERE user_id = $1",
                killer, XP_PER_KILL, XP_PER_LEVEL)
            if updated == "UPDATE 0":
                raise NotProvisioned(f"no progression of {killer} yet")
