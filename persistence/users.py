"""The auth service's store: accounts in auth.users."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from persistence.errors import Conflict
from persistence.outbox import OutboxEvent, add_event

# What an account's username and email may be (docs/protocol.md, "Auth"): registration
# checks them, and so does every consumer of user.registered (bus/events.py).
USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
# Plausible, not RFC 5322: one @, no spaces or control characters (Postgres text cannot
# hold NUL), a dot in the domain.
EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+")
EMAIL_MAX = 254
UUID_LENGTH = 36  # a uuid written canonically, 8-4-4-4-12


def plausible_email(email: str) -> bool:
    return len(email) <= EMAIL_MAX and EMAIL.fullmatch(email) is not None


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    email: str
    password_hash: str
    created_at: datetime
    operator: bool = False  # may use the console's routes (/v1/admin/)
    disabled_at: datetime | None = None  # disabled by an operator: no token, no login


def _user(row: asyncpg.Record) -> User:
    return User(row["id"], row["username"], row["email"], row["password_hash"], row["created_at"],
                row["operator"], row["disabled_at"])


async def insert_user(conn: asyncpg.Connection, user: User, announce: OutboxEvent) -> None:
    """Insert the account and its `user.registered` event in the caller's transaction."""
    try:
        await conn.execute(
            "INSERT INTO auth.users (id, username, username_key, email, password_hash, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            user.id, user.username, user.username.lower(), user.email, user.password_hash,
            user.created_at,
        )
    except asyncpg.UniqueViolationError as exc:
        field = "username" if "username" in (exc.constraint_name or "") else "email"
        raise Conflict(f"that {field} is taken", fields={field: "taken"}) from None
    await add_event(conn, announce)


async def find_by_login(conn: asyncpg.Connection, login: str) -> User | None:
    """A user by username (any case) or by email."""
    if "\x00" in login:
        return None  # Postgres text cannot hold NUL, and no username or email contains one
    key = login.lower()
    row = await conn.fetchrow(
        "SELECT * FROM auth.users WHERE username_key = $1 OR email = $1 LIMIT 1", key
    )
    return _user(row) if row else None


async def get_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    row = await conn.fetchrow("SELECT * FROM auth.users WHERE id = $1", user_id)
    return _user(row) if row else None


async def find_user(conn: asyncpg.Connection, who: str) -> User | None:
    """A user by id, username (any case) or email: how an operator names one. An id only
    in its canonical form, with dashes: a username may be 32 hex digits, and could pass
    for another account's id written without them."""
    if len(who) == UUID_LENGTH and who.count("-") == 4:
        try:
            user = await get_user(conn, uuid.UUID(who))
        except ValueError:
            user = None
        if user is not None:
            return user
    return await find_by_login(conn, who)


async def set_operator(conn: asyncpg.Connection, username: str, operator: bool) -> User | None:
    """Grant or take back the operator role; the user, or None if there is no such name."""
    row = await conn.fetchrow("UPDATE auth.users SET operator = $2 WHERE username_key = $1"
                              " RETURNING *", username.lower(), operator)
    return _user(row) if row else None


async def set_disabled(conn: asyncpg.Connection, user_id: uuid.UUID,
                       disabled: bool) -> User | None:
    """Disable the account (from now; an account disabled already keeps its time) or
    enable it again; the user, or None if there is none."""
    row = await conn.fetchrow(
        "UPDATE auth.users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now())"
        " END WHERE id = $1 RETURNING *", user_id, disabled)
    return _user(row) if row else None


async def set_password_hash(conn: asyncpg.Connection, user_id: uuid.UUID, old: str,
                            new: str) -> None:
    """Replace the password's hash, unless it changed since `old` was read."""
    await conn.execute("UPDATE auth.users SET password_hash = $3 WHERE id = $1"
                       " AND password_hash = $2", user_id, old, new)


async def disabled_users(conn: asyncpg.Connection) -> set[uuid.UUID]:
    rows = await conn.fetch("SELECT id FROM auth.users WHERE disabled_at IS NOT NULL")
    return {row["id"] for row in rows}
