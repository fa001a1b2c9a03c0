"""Sessions that can end (docs/protocol.md, "Auth"), in auth.sessions and
auth.refresh_tokens.

A login (or a registration) starts a session: a family of refresh tokens, one live at a
time, each used up by the refresh that takes it (and gives the next). A refresh token
used a second time was copied: its whole session ends, the thief's copy and the owner's
newest token alike. A session also ends by logout, or when an operator disables its
account; its access tokens then stop working in every api process (console/access.py),
and its world sockets close.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import asyncpg

from auth.tokens import Tokens
from persistence.errors import Unauthenticated, ValidationFailed
from persistence.postgres import Postgres

REFRESH_TOKEN_BYTES = 32  # 256 random bits
REFRESH_TOKEN_MOST_CHARS = 128  # a longer one is no token of ours: refused unhashed
# How long an ended session is remembered by every api process after it ended: as long
# as an access token issued just before then lives, and a minute for clocks and commits.
ENDED_MARGIN_S = 60

Outcome = Literal["rotated", "reused", "ended", "unknown"]


@dataclass(frozen=True)
class Issued:
    """What a login, a registration or a refresh answers."""

    user_id: uuid.UUID
    token: str  # the access token
    refresh_token: str
    expires_in: int  # the access token's, in seconds

    def json(self) -> dict[str, object]:
        return {"user_id": str(self.user_id), "token": self.token,
                "refresh_token": self.refresh_token, "expires_in": self.expires_in}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def refresh_token_of(body: Mapping[str, object], *, required: bool = True) -> str | None:
    """The body's `refresh_token` (None if absent and not required); ValidationFailed if
    it is not a string, or missing when required."""
    value = body.get("refresh_token")
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValidationFailed("a refresh_token is required", fields={
            "refresh_token": "required" if value is None else "must be a string"})
    return value


async def insert_session(conn: asyncpg.Connection, session_id: uuid.UUID,
                         user_id: uuid.UUID, ttl_s: int, token_hash: bytes) -> None:
    await conn.execute(
        "INSERT INTO auth.sessions (id, user_id, expires_at)"
        " VALUES ($1, $2, now() + make_interval(secs => $3))", session_id, user_id, ttl_s)
    await conn.execute("INSERT INTO auth.refresh_tokens (hash, session_id) VALUES ($1, $2)",
                       token_hash, session_id)


async def rotate(conn: asyncpg.Connection, old_hash: bytes, new_hash: bytes
                 ) -> tuple[Outcome, uuid.UUID | None, uuid.UUID | None]:
    """Use up the refresh token `old_hash` for `new_hash`: (outcome, user, session).
    Both rows are locked, so of two refreshes with one token the second waits, then
    finds it used: a reuse, which ends the session."""
    row = await conn.fetchrow(
        "SELECT t.used_at, s.id, s.user_id, s.revoked_at IS NOT NULL OR s.expires_at <= now()"
        " AS over FROM auth.refresh_tokens t JOIN auth.sessions s ON s.id = t.session_id"
        " WHERE t.hash = $1 FOR UPDATE OF t, s", old_hash)
    if row is None:
        return "unknown", None, None
    session, user = row["id"], row["user_id"]
    if row["over"]:
        return "ended", user, session
    if row["used_at"] is not None:
        await end_session(conn, session)
        return "reused", user, session
    await conn.execute("UPDATE auth.refresh_tokens SET used_at = now() WHERE hash = $1",
                       old_hash)
    await conn.execute("INSERT INTO auth.refresh_tokens (hash, session_id) VALUES ($1, $2)",
                       new_hash, session)
    return "rotated", user, session


async def session_of(conn: asyncpg.Connection, token_hash: bytes
                     ) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(user, session) of a refresh token, used or not."""
    row = await conn.fetchrow(
        "SELECT s.user_id, s.id FROM auth.refresh_tokens t JOIN auth.sessions s"
        " ON s.id = t.session_id WHERE t.hash = $1", token_hash)
    return (row["user_id"], row["id"]) if row else None


async def end_session(conn: asyncpg.Connection, session_id: uuid.UUID) -> None:
    # clock_timestamp(), not the transaction's start: after any access token a refresh
    # holding the row issued, so the ended are remembered long enough (ended_sessions).
    await conn.execute("UPDATE auth.sessions SET revoked_at = clock_timestamp()"
                       " WHERE id = $1 AND revoked_at IS NULL", session_id)


async def end_user_sessions(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[uuid.UUID]:
    """End every live session of the user (the console's disable); their ids."""
    rows = await conn.fetch("UPDATE auth.sessions SET revoked_at = clock_timestamp()"
                            " WHERE user_id = $1 AND revoked_at IS NULL RETURNING id", user_id)
    return [row["id"] for row in rows]


async def ended_sessions(conn: asyncpg.Connection, within_s: int) -> set[uuid.UUID]:
    """The sessions that ended within the last `within_s` seconds: those whose access
    tokens may still be unexpired."""
    rows = await conn.fetch("SELECT id FROM auth.sessions WHERE revoked_at >"
                            " now() - make_interval(secs => $1)", within_s)
    return {row["id"] for row in rows}


class Sessions:
    def __init__(self, pg: Postgres, tokens: Tokens, *, ttl_s: int,
                 on_ended: Callable[[uuid.UUID, uuid.UUID], Awaitable[None]]) -> None:
        self._pg = pg
        self._tokens = tokens
        self._ttl_s = ttl_s
        self._on_ended = on_ended  # tells every api process (console/access.py)

    async def start(self, conn: asyncpg.Connection, user_id: uuid.UUID) -> Issued:
        """Start a session in the caller's transaction: its first tokens."""
        session_id = uuid.uuid4()
        refresh = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        await insert_session(conn, session_id, user_id, self._ttl_s, _digest(refresh))
        return self._issued(user_id, session_id, refresh)

    async def refresh(self, body: Mapping[str, object]) -> Issued:
        old = refresh_token_of(body)
        assert old is not None
        if len(old) > REFRESH_TOKEN_MOST_CHARS:
            raise Unauthenticated("the refresh token is not valid")
        new = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        outcome, user, session = await self._pg.transact(rotate, _digest(old), _digest(new))
        if outcome == "reused":
            assert user is not None and session is not None
            await self._on_ended(user, session)
            raise Unauthenticated("the refresh token was used already: the session has ended")
        if outcome == "ended":
            raise Unauthenticated("the session has ended")
        if outcome == "unknown":
            raise Unauthenticated("the refresh token is not valid")
        assert user is not None and session is not None
        return self._issued(user, session, new)

    async def logout(self, authorization: str | None, body: Mapping[str, object]) -> None:
        """End the session of the bearer's access token, and that of the refresh token
        in the body, if any (it alone will do: an access token may have expired)."""
        refresh = refresh_token_of(body, required=False)
        ending: set[tuple[uuid.UUID, uuid.UUID]] = set()
        if authorization or refresh is None:
            claims = self._tokens.from_header(authorization)
            ending.add((claims.user_id, claims.session_id))
        if refresh is not None:
            found = (None if len(refresh) > REFRESH_TOKEN_MOST_CHARS
                     else await self._pg.transact(session_of, _digest(refresh)))
            if found is None:
                raise Unauthenticated("the refresh token is not valid")
            ending.add(found)
        for user, session in ending:
            await self._pg.transact(end_session, session)
            await self._on_ended(user, session)

    def _issued(self, user_id: uuid.UUID, session_id: uuid.UUID, refresh: str) -> Issued:
        return Issued(user_id, self._tokens.issue(user_id, session_id), refresh,
                      self._tokens.ttl_s)
