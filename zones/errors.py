"""Errors of the world: a zone that is not running, and a refusal a remote zone sent."""

from __future__ import annotations

from persistence.errors import DomainError


class ZoneUnavailable(DomainError):
    """The zone is not running (or not reachable) right now."""

    code = "zone_unavailable"


class Refused(DomainError):
    """A zone in another process refused a join, with a docs/protocol.md error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
