"""GET /v1/me: the account and what provisioning has made of it so far.

Each part is read by the store of the service that owns it, all in one
transaction (one bridge crossing); a part not provisioned yet is null or empty.
"""

from __future__ import annotations

import uuid

import asyncpg

from bus.events import iso
from characters.store import active_character_id
from persistence.buildings import list_buildings
from persistence.errors import NotFound
from persistence.players import get_player
from persistence.progression import get_progression
from persistence.users import get_user


async def read_me(conn: asyncpg.Connection, user_id: uuid.UUID) -> dict[str, object]:
    user = await get_user(conn, user_id)
    if user is None:
        raise NotFound("no account for this token")
    player = await get_player(conn, user_id)
    progression = await get_progression(conn, user_id)
    active = await active_character_id(conn, user_id)
    return {
        "user_id": str(user.id), "username": user.username, "email": user.email,
        "player": player and {"user_id": str(player.user_id), "username": player.username,
                              "created_at": iso(player.created_at), "kills": player.kills,
                              "deaths": player.deaths},
        "progression": progression and {
            "level": progression.level, "xp": progression.xp,
            "weapons": list(progression.weapons), "skills": list(progression.skills)},
        "buildings": [{"kind": b.kind, "level": b.level}
                      for b in await list_buildings(conn, user_id)],
        "active_character_id": active and str(active),
    }
