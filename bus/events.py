"""Event payloads on the bus (docs/protocol.md, "Bus events"); subjects are in
bus/subjects.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import orjson

from bus.subjects import USER_REGISTERED
from persistence.outbox import OutboxEvent
from persistence.users import USERNAME, User, plausible_email

# A user.registered is a few hundred bytes; one far larger is not one (nor worth parsing).
EVENT_MAX_BYTES = 4096


class MalformedEvent(ValueError):
    """An event whose payload can never be handled; retrying it would not help."""


@dataclass(frozen=True)
class UserRegistered:
    user_id: uuid.UUID
    username: str
    email: str
    registered_at: datetime


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def user_registered(user: User) -> OutboxEvent:
    payload = {"userId": str(user.id), "username": user.username, "email": user.email,
               "registrationTimestamp": iso(user.created_at)}
    return OutboxEvent(USER_REGISTERED, str(user.id), orjson.dumps(payload))


@dataclass(frozen=True)
class CombatKilled:
    """A death in a zone (`combat.killed`, rules/shooter/game.py): who killed whom."""

    event_id: uuid.UUID
    killer_user_id: uuid.UUID
    victim_user_id: uuid.UUID


def _json_object(data: bytes) -> dict[str, object]:
    """An event's payload: a JSON object of EVENT_MAX_BYTES at most."""
    if len(data) > EVENT_MAX_BYTES:
        raise MalformedEvent(f"{len(data)} bytes, over {EVENT_MAX_BYTES}")
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedEvent("not a JSON object")
    return payload


def parse_combat_killed(data: bytes) -> CombatKilled:
    """The payload of a `combat.killed`, as far as its consumers read it."""
    payload = _json_object(data)
    ids = {}
    for name in ("event_id", "killer_user_id", "victim_user_id"):
        value = payload.get(name)
        try:
            ids[name] = uuid.UUID(value) if isinstance(value, str) else None
        except ValueError:
            ids[name] = None
        if ids[name] is None:
            raise MalformedEvent(f"{name} is not a UUID")
    return CombatKilled(**ids)  # type: ignore[arg-type]  # each checked just above


def parse_user_registered(data: bytes) -> UserRegistered:
    """The payload of a `user.registered`, checked field by field: a username or email
    that registration would refuse is refused here too."""
    payload = _json_object(data)
    names = ("userId", "username", "email", "registrationTimestamp")
    fields = {name: value for name in names
              if isinstance(value := payload.get(name), str) and value}
    missing = [name for name in names if name not in fields]
    if missing:
        raise MalformedEvent(f"missing or not a string: {', '.join(missing)}")
    # The reasons name the field, never its value: they are logged (bus/consumer.py).
    try:
        user_id = uuid.UUID(fields["userId"])
    except ValueError:
        raise MalformedEvent("userId is not a UUID") from None
    try:
        registered_at = datetime.fromisoformat(fields["registrationTimestamp"])
    except ValueError:
        raise MalformedEvent("registrationTimestamp is not an ISO 8601 time") from None
    if registered_at.tzinfo is None:
        raise MalformedEvent("registrationTimestamp has no time zone")
    if not USERNAME.fullmatch(fields["username"]):
        raise MalformedEvent("username is not 3-32 letters, digits, _ . or -")
    if not plausible_email(fields["email"]):
        raise MalformedEvent("email is not a plausible address")
    return UserRegistered(user_id, fields["username"], fields["email"], registered_at)
