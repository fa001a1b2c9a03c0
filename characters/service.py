"""The character service: validation, Postgres writes with their events, the Redis
cache-aside list, and the default character a new account is provisioned with
(docs/protocol.md, "Characters"). HTTP routes, the world's edge and the provisioning
consumer all call it."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import orjson

from bus import events
from bus.subjects import CHARACTER_CREATED
from characters.store import (
    DEFAULT_CLASS,
    Character,
    cache_key,
    insert_character,
    list_characters,
    provision_default_characters,
)
from persistence.cache import Cache, CacheMiss
from persistence.errors import ValidationFailed
from persistence.outbox import OutboxEvent
from persistence.postgres import Postgres

CLASSES = ("recruit", "scout", "engineer", "medic", "heavy")
# Letters of any script, digits, space, _ and -; 2..24 characters, not blank.
NAME = re.compile(r"[\w \-]+")
NAME_MIN, NAME_MAX = 2, 24


def _name_chars_ok(name: str) -> bool:
    """NAME, plus combining marks after a base character: many scripts (Devanagari vowel
    signs, decomposed accents) cannot write a word without them, and `\\w` has none."""
    if unicodedata.category(name[0]).startswith("M"):
        return False
    return all(NAME.fullmatch(c) or unicodedata.category(c).startswith("M") for c in name)


def validate_character(body: Mapping[str, object]) -> tuple[str, str]:
    name, class_ = body.get("name"), body.get("class")
    problems = {}
    if not isinstance(name, str):
        problems["name"] = "required" if name is None else "must be a string"
    elif not NAME_MIN <= len(name) <= NAME_MAX:
        problems["name"] = f"{NAME_MIN} to {NAME_MAX} characters"
    elif not name.strip():
        problems["name"] = "must not be blank"
    elif not _name_chars_ok(name):
        problems["name"] = "only letters, digits, space, _ and -"
    if class_ is None or class_ == "":
        class_ = DEFAULT_CLASS
    elif class_ not in CLASSES:
        problems["class"] = f"one of {', '.join(CLASSES)}"
    if problems:
        raise ValidationFailed("the character is not valid", fields=problems)
    assert isinstance(name, str) and isinstance(class_, str)
    return name, class_


def character_created(character: Character) -> OutboxEvent:
    """The `character.created` event of a new character (docs/protocol.md, "Bus events")."""
    payload = {"character_id": str(character.id), "user_id": str(character.user_id),
               "name": character.name, "class": character.class_, "zone_id": character.zone_id,
               "x": character.x, "y": character.y, "created_at": events.iso(character.created_at)}
    return OutboxEvent(CHARACTER_CREATED, str(character.id), orjson.dumps(payload))


def character_json(c: Character) -> dict[str, object]:
    return {"id": str(c.id), "user_id": str(c.user_id), "name": c.name, "class": c.class_,
            "zone_id": c.zone_id, "x": c.x, "y": c.y, "active": c.active,
            "created_at": events.iso(c.created_at)}


class Characters:
    def __init__(
        self, pg: Postgres, cache: Cache, *, zone_id: str, max_per_user: int, cache_ttl_s: int,
        on_committed: Callable[[], None],
    ) -> None:
        self._pg = pg
        self._cache = cache
        self._zone_id = zone_id
        self._max_per_user = max_per_user
        self._cache_ttl_s = cache_ttl_s
        self._on_committed = on_committed  # wakes the outbox relay

    async def create(self, user_id: uuid.UUID, body: Mapping[str, object]) -> Character:
        name, class_ = validate_character(body)
        draft = Character(uuid.uuid4(), user_id, name, class_, self._zone_id, 0.0, 0.0,
                          False, datetime.now(UTC))
        created = await self._pg.transact(insert_character, draft, limit=self._max_per_user,
                                          announce=character_created)
        self._on_committed()
        await self._cache.invalidate(cache_key(user_id))
        return created

    async def provision_defaults(self, user_ids: list[uuid.UUID]) -> None:
        """Give each new user its default character (idempotent: the character-service
        consumer of `user.registered` calls this on every delivery)."""
        created = await self._pg.transact(provision_default_characters, user_ids,
                                          zone_id=self._zone_id, announce=character_created)
        if created:
            self._on_committed()
        # Also on a redelivery: the first delivery may have died between commit and here.
        await self._cache.invalidate(*(cache_key(u) for u in user_ids))

    async def list_json(self, user_id: uuid.UUID) -> bytes:
        """The user's characters as the JSON array of a list response, oldest first."""
        key = cache_key(user_id)
        cached = await self._cache.get(key)
        if not isinstance(cached, CacheMiss):
            return cached
        # The miss carries the generation read *before* this query: a write that
        # lands while we read makes the fill below a no-op.
        rows = await self._pg.transact(list_characters, user_id)
        encoded = orjson.dumps([character_json(c) for c in rows])
        await self._cache.fill(key, encoded, cached, self._cache_ttl_s)
        return encoded
