"""Log lines (docs/operations.md, "Logs"): one line per event, JSON lines or text.

Each line names the process role and, where there is one, the zone, the HTTP request
or the world session it belongs to. Those come from context variables that the
request, the session and the zone's tasks set for themselves (a line may also name
them in `extra`, which wins). No line may hold a secret: whatever a message or a
traceback carries, JWTs, bearer credentials, `token=` query values, password
fields, and the password (or NATS token) in a service's URL are replaced by a marker
before the line is written. Nor personal data: lines name events and users by their ids
(and a connection's lines its client's address, the one thing that tells an abuser
apart), and as a net under that, an email address, or the
values in a Postgres error's `Key (...)=(...)` detail (a unique violation names the
username or email it found), are replaced too.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar

import orjson

from zones.context import ZONE

REQUEST: ContextVar[str | None] = ContextVar("request", default=None)
SESSION: ContextVar[str | None] = ContextVar("session", default=None)
# The client's address on the API port (behind a trusted proxy, the one it names).
CLIENT: ContextVar[str | None] = ContextVar("client", default=None)
FORMATS = ("json", "text")
REDACTED = "[redacted]"

# Each pattern: what leads to a secret (kept), then the secret (replaced). Each is linear
# in the line: a match may begin only where a run of its characters begins (a lookbehind),
# and the quantifiers that could re-scan a run are possessive or bounded (a 16 KB URL of
# one letter took a second with `[\w.+-]+@`, tried from each of its positions).
_SECRETS = re.compile("|".join((
    r"(?P<a>)(?<![\w-])eyJ[\w-]*+\.[\w-]*+\.[\w-]*+",  # a JWT: its header starts {" in base64
    r"(?P<b>bearer\s+)\S+",  # an Authorization header's credentials
    r"(?P<c>token=)[^&\s\"']+",  # a query string's token
    r"(?P<d>password\\?\"\s*:\s*\\?\")(?:[^\"\\]|\\.)*",  # JSON: "password": "..."
    r"(?P<e>password'\s*:\s*')(?:[^'\\]|\\.)*",  # a Python repr: 'password': '...'
    r"(?P<f>password=)[^&\s]+",  # a form or query field
    # An email address (a domain of names, not an IP: postgres@127.0.0.1 is no one's).
    r"(?P<g>)(?<![\w.+-])[\w.+-]{1,64}@(?:[a-z0-9-]{1,63}\.){1,8}[a-z]{2,63}\b",
    # Postgres: Key (username)=(ada_99) already exists.
    r"(?P<h>\bKey \([^)\n]{0,200}\)=\()[^\n]*+",
    # A URL's password: postgresql://outpost:secret@db, redis://:secret@cache.
    r"(?P<i>://[^:/@\s]{0,256}:)[^@/\s]{1,256}(?=@)",
    # A NATS URL's lone user part is a token: nats://s3cr3t@nats (docs/operations.md).
    r"(?P<j>\b(?:nats|tls)://)[^:/@\s,]{1,256}(?=@)",
)), re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: next(g for g in m.groups() if g is not None) + REDACTED,
                        text)


def _context(record: logging.LogRecord) -> dict[str, str]:
    found = {}
    for key, var in (("zone", ZONE), ("request", REQUEST), ("session", SESSION),
                     ("client", CLIENT)):
        value = getattr(record, key, None) or var.get()
        if value:
            found[key] = str(value)
    return found


class JsonLines(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "role": self._role, "logger": record.name,
            **_context(record), "message": redact(record.getMessage()),
        }
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line).decode()


class Text(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        where = " ".join(f"{k}={v}" for k, v in {"role": self._role,
                                                 **_context(record)}.items())
        return redact(f"{super().format(record)} [{where}]")


def configure(*, role: str, form: str, level: str) -> None:
    """Send every log line to stderr in `form` ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(role) if form == "json" else Text(role))
    logging.basicConfig(level=level, handlers=[handler], force=True)
