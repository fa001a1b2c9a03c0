"""Domain errors: what went wrong, as a docs/protocol.md error code and a message.

Each layer raises these (a store a Conflict, auth an InvalidCredentials, the world a
NotFound); each edge maps the code to its own shape, in one place: HTTP statuses in
server/http/errors.py, WebSocket `error` messages in server/ws/session.py. They sit
at the bottom of the package graph (persistence is imported by auth, bus, zones and
server alike) and know nothing of HTTP. Errors only one edge can meet live there
(a body that is not JSON: server/http/errors.py; a zone not running: zones/errors.py).
"""

from __future__ import annotations

import ssl
from typing import Literal


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


class Refused(Exception):
    """A backing service turned this process away as it connected: it refused the
    credentials, or TLS failed. No retry mends that (unlike a service not reachable yet,
    which is waited for), so the process stops at start, and server/config.py names the
    setting to fix. Raised by the Postgres, Redis and NATS actors."""

    def __init__(self, service: Service, what: Refusal, detail: str) -> None:
        super().__init__(f"{service} refused this process ({what}): {detail}")
        self.service = service
        self.what = what
        self.detail = detail


# "certificate": the service's certificate is not trusted; "tls": another TLS failure (such
# as a client certificate demanded and not given, or not trusted).
Refusal = Literal["credentials", "certificate", "tls"]
Service = Literal["postgres", "redis", "nats"]


def refusal_of_tls(exc: BaseException) -> Refusal | None:
    """What a TLS failure in `exc` (or in what caused it: libraries wrap them) refuses."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain is short; bounded, as one could loop
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return "certificate"
        if isinstance(seen, ssl.SSLError):
            return "tls"
        seen = seen.__cause__ or seen.__context__
    return None
