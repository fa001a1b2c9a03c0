"""Bus subjects, streams and event payloads (PROTOCOL.md, "Bus events")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from persistence.characters import Character
from persistence.outbox import OutboxEvent
from persistence.users import User

USER_REGISTERED = "user.registered"
CHARACTER_CREATED = "character.created"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    # Longer than any outbox retry, so a re-sent event is dropped by its Nats-Msg-Id.
    duplicate_window_s: float = 3600.0


STREAMS = (
    StreamSpec("USERS", ("user.>",)),
    StreamSpec("CHARACTERS", ("character.>",)),
)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def user_registered(user: User) -> OutboxEvent:
    payload = {"userId": str(user.id), "username": user.username, "email": user.email,
               "registrationTimestamp": iso(user.created_at)}
    return OutboxEvent(USER_REGISTERED, str(user.id), orjson.dumps(payload))


def character_created(character: Character) -> OutboxEvent:
    payload = {"character_id": str(character.id), "user_id": str(character.user_id),
               "name": character.name, "class": character.class_, "zone_id": character.zone_id,
               "x": character.x, "y": character.y, "created_at": iso(character.created_at)}
    return OutboxEvent(CHARACTER_CREATED, str(character.id), orjson.dumps(payload))
