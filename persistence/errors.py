"""Domain errors: what went wrong, as a docs/protocol.md error code and a message.

Each layer raises these (a store a Conflict, auth an InvalidCredentials, the world a
NotFound); each edge maps the code to its own shape, in one place: HTTP statuses in
server/http/errors.py, WebSocket `error` messages in server/ws/session.py. They sit
at the bottom of the package graph (persistence is imported by auth, bus, zones and
server alike) and know nothing of HTTP. Errors only one edge can meet live there
(a body that is not JSON: server/http/errors.py; a zone not running: zones/errors.py).
"""

from __future__ import annotations


class DomainError(Exception):
    code = "internal"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class ValidationFailed(DomainError):
    code = "validation_failed"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class InvalidCredentials(DomainError):
    code = "invalid_credentials"


class Forbidden(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A backing service is down; the request changed nothing."""

    code = "unavailable"


class NotProvisioned(Exception):
    """A row an event is about is not there yet (its user's provisioning is behind): the
    consumer's unit of work fails whole, and the event is delivered again later
    (bus/consumer.py), a dead letter after its last delivery. Met only by consumers."""
