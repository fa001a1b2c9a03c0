"""Every NATS subject and JetStream stream Outpost uses (docs/protocol.md, "Bus events"
and "Zones across processes"), in one place so that no two modules spell one twice."""

from __future__ import annotations

from dataclasses import dataclass

# Events (payloads in bus/events.py).
USER_REGISTERED = "user.registered"
CHARACTER_CREATED = "character.created"
PLAYER_MOVED = "player.moved"
COMBAT_KILLED = "combat.killed"


# Between api processes and zone processes.
def zone_join(zone_id: str) -> str:
    """Request/reply: an api process asks the zone to admit a character."""
    return f"zone.{zone_id}.join"


def zone_input(zone_id: str) -> str:
    """An api process's moves and leaves for the zone, one message per drain."""
    return f"zone.{zone_id}.input"


def zone_snapshot(zone_id: str) -> str:
    """The zone's snapshot, once per tick, for every api process."""
    return f"zone.{zone_id}.snapshot"


def api_events(instance_id: str) -> str:
    """What a zone tells one api process (a session of its was taken over)."""
    return f"api.{instance_id}.events"


def zone_roster(zone_id: str) -> str:
    """Request/reply: the operator console asks the zone who plays in it."""
    return f"zone.{zone_id}.roster"


# The operator console's word to every api process: kick a character, disable a user.
ADMIN_SESSIONS = "admin.sessions"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    # Longer than any outbox retry, so a re-sent event is dropped by its Nats-Msg-Id.
    duplicate_window_s: float = 3600.0


STREAMS = (
    StreamSpec("USERS", ("user.>",)),
    StreamSpec("CHARACTERS", ("character.>",)),
    StreamSpec("COMBAT", ("combat.>",)),
)
