"""Domain errors: each carries the PROTOCOL.md code; one place per edge maps them.

They live at the bottom of the package graph (persistence is imported by auth,
bus and server alike) so every layer raises the same small hierarchy.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "internal"
    status = 500

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class ValidationFailed(DomainError):
    code, status = "validation_failed", 400


class BadJson(DomainError):
    code, status = "bad_json", 400


class Unauthenticated(DomainError):
    code, status = "unauthenticated", 401


class InvalidCredentials(DomainError):
    code, status = "invalid_credentials", 401


class Forbidden(DomainError):
    code, status = "forbidden", 403


class NotFound(DomainError):
    code, status = "not_found", 404


class Conflict(DomainError):
    code, status = "conflict", 409


class TooLarge(DomainError):
    code, status = "too_large", 413


class UnsupportedMediaType(DomainError):
    code, status = "unsupported_media_type", 415


class RateLimited(DomainError):
    code, status = "rate_limited", 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A backing service is down; the request changed nothing."""

    code, status = "unavailable", 503


class ZoneUnavailable(DomainError):
    """The character's zone is not running (or not reachable) right now."""

    code, status = "zone_unavailable", 503
