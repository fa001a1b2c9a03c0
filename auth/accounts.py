"""Register and login (docs/protocol.md, "Auth")."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import trio

from auth.passwords import Passwords
from auth.ratelimit import SlidingWindowLimiter, admit
from auth.sessions import Issued, Sessions
from bus import events
from persistence.errors import Forbidden, InvalidCredentials, RateLimited, ValidationFailed
from persistence.postgres import Postgres
from persistence.users import (
    USERNAME,
    User,
    find_by_login,
    insert_user,
    plausible_email,
    set_password_hash,
)

PASSWORD_MIN, PASSWORD_MAX = 8, 128


@dataclass(frozen=True)
class Registration:
    username: str
    email: str
    password: str


@dataclass(frozen=True)
class Limits:
    """What one api process lets through (docs/protocol.md, "Auth"): login attempts per
    client address, failed logins per account from one address and from all,
    registrations per address and in all."""

    login_per_address: SlidingWindowLimiter
    login_failures_per_account_and_address: SlidingWindowLimiter
    login_failures_per_account: SlidingWindowLimiter
    register_per_address: SlidingWindowLimiter
    register_total: SlidingWindowLimiter


def _strings(
    body: Mapping[str, object], names: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """The named string fields, and a problem for each one missing or not a string."""
    values: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name in names:
        value = body.get(name)
        if not isinstance(value, str):
            problems[name] = "required" if value is None else "must be a string"
        else:
            values[name] = value
    return values, problems


def validate_registration(body: Mapping[str, object]) -> Registration:
    values, problems = _strings(body, ("username", "email", "password"))
    username, email, password = (values.get(k) for k in ("username", "email", "password"))
    if username is not None and not USERNAME.fullmatch(username):
        problems["username"] = "3 to 32 characters of letters, digits, _ . -"
    if email is not None and not plausible_email(email):
        problems["email"] = "not a plausible email address"
    if password is not None and not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        problems["password"] = f"{PASSWORD_MIN} to {PASSWORD_MAX} characters"
    if problems:
        raise ValidationFailed("the registration is not valid", fields=problems)
    assert username is not None and email is not None and password is not None
    return Registration(username, email.lower(), password)


def _within(now: float, message: str, *buckets: tuple[SlidingWindowLimiter, str]) -> None:
    """Count an attempt in each bucket, or refuse it (429) counting nothing."""
    wait = admit(now, *buckets)
    if wait:
        raise RateLimited(message, retry_after_s=wait)


class Accounts:
    def __init__(
        self, pg: Postgres, passwords: Passwords, sessions: Sessions, *,
        on_committed: Callable[[], None], limits: Limits,
    ) -> None:
        self._pg = pg
        self._passwords = passwords
        self._sessions = sessions
        self._on_committed = on_committed  # wakes the outbox relay
        self._limits = limits

    async def register(self, body: Mapping[str, object], client_address: str) -> Issued:
        form = validate_registration(body)
        # Before the hash: each registration costs an Argon2 hash and four provisioned
        # rows, and neither may be had faster than the limits allow.
        _within(trio.current_time(), "too many registrations; try again later",
                (self._limits.register_per_address, client_address),
                (self._limits.register_total, ""))
        user = User(
            id=uuid.uuid4(), username=form.username, email=form.email,
            password_hash=await self._passwords.hash(form.password),
            created_at=datetime.now(UTC),
        )
        issued = await self._pg.transact(self._insert, user)
        self._on_committed()
        return issued

    async def _insert(self, conn: asyncpg.Connection, user: User) -> Issued:
        await insert_user(conn, user, events.user_registered(user))
        return await self._sessions.start(conn, user.id)

    async def login(self, body: Mapping[str, object], client_address: str) -> Issued:
        values, problems = _strings(body, ("username", "password"))
        if problems:
            raise ValidationFailed("username and password are required", fields=problems)
        login, password = values["username"], values["password"]
        now = trio.current_time()
        refused = "too many login attempts; try again later"
        # The address first: one over its limit is refused before any account is looked
        # up or counted, so a guesser at its limit cannot lock anyone out.
        _within(now, refused, (self._limits.login_per_address, client_address))
        user = await self._pg.transact(find_by_login, login)
        # One count per account, by its id whichever of its names is typed; an unknown
        # name counts under itself, as an account would, so that the limit tells nobody
        # which accounts exist.
        account = f"user:{user.id}" if user else f"name:{login.lower()}"
        # Failures count per account from this address: a guesser, even under its own
        # address's limit, locks the account out for itself only, not for its owner.
        # And per account from every address, with a looser limit: many addresses
        # guessing at once are stopped too (at the price of locking the owner out).
        failures = ((self._limits.login_failures_per_account_and_address,
                     f"{account}|{client_address}"),
                    (self._limits.login_failures_per_account, account))
        # Counted as it starts (guesses sent at once count at once), taken back below
        # unless the password was wrong: only failures count.
        _within(now, refused, *failures)
        wrong = False
        try:
            # Always verify (a dummy hash when the user is unknown): same answer, same time.
            wrong = not await self._passwords.verify(user.password_hash if user else None,
                                                     password)
        finally:
            if not wrong:
                for limiter, key in failures:
                    limiter.forget(key, now)
        if wrong:
            raise InvalidCredentials("unknown username or wrong password")
        assert user is not None
        if user.disabled_at is not None:  # said only to who knows the password
            raise Forbidden("this account has been disabled")
        # Hashed with a lower cost than configured now (an older setting): hashed again,
        # while the password is at hand, so raising the cost reaches every account.
        rehashed = (await self._passwords.hash(password)
                    if self._passwords.needs_rehash(user.password_hash) else None)
        return await self._pg.transact(self._logged_in, user, rehashed)

    async def _logged_in(self, conn: asyncpg.Connection, user: User,
                         rehashed: str | None) -> Issued:
        if rehashed is not None:
            await set_password_hash(conn, user.id, user.password_hash, rehashed)
        return await self._sessions.start(conn, user.id)
