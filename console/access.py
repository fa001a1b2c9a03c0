"""Which accounts are disabled and which sessions ended, as one api process knows it,
and the word to that process's world sessions (docs/protocol.md, "Operator console" and
"Auth").

An operator's kick or disable, and a session's end (a logout, a refresh token used
twice), is said once on `admin.sessions`, heard by every api process at once: a kick
closes the sessions playing that character (4010), a disable those of that user
(4011), an end those of that session (4012), and from then on the user's (or the
session's) tokens are refused. A process that missed it (NATS away, or started later)
reads the disabled accounts and the recently ended sessions from Postgres at start and
every REFRESH_S, so each holds everywhere within that bound whatever NATS does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Protocol

import trio

from auth.sessions import ENDED_MARGIN_S, ended_sessions
from auth.tokens import Claims
from bus import subjects
from bus.connection import Bus, BusUnavailable
from persistence.postgres import Postgres
from persistence.users import disabled_users
from zones import contract

log = logging.getLogger(__name__)

REFRESH_S = 5.0
KICKED, DISABLED, ENDED = 4010, 4011, 4012  # the close codes (docs/protocol.md, "Closing")


class Closer(Protocol):
    def __call__(self, user: uuid.UUID | None, code: int, reason: str, *,
                 character: str | None = None, session: uuid.UUID | None = None) -> int:
        """Close the world sessions of `user` (only those playing `character`, or of the
        auth session `session`, if given; any user's of `session` if `user` is None) with
        `code`; how many."""


class Access:
    def __init__(self, pg: Postgres, bus: Bus, refusals: contract.Refusals, *,
                 token_ttl_s: int) -> None:
        self._pg = pg
        self._bus = bus
        self._refusals = refusals
        # The sets every check reads (auth/tokens.py holds them too): changed in place.
        self.disabled: set[uuid.UUID] = set()
        self.ended: set[uuid.UUID] = set()  # sessions whose access tokens may be alive
        self._remember_s = token_ttl_s + ENDED_MARGIN_S
        self._close: Closer = _nobody  # the edge's, once it runs
        self._changes = 0  # accounts disabled or enabled by word: a read older is stale

    async def run(self, close: Closer, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep `disabled` and `ended` current and close the sessions they name, with
        `close` (the edge's); ready once Postgres has been read (or tried)."""
        self._close = close
        await self._refresh()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hear)
            task_status.started()
            while True:
                await trio.sleep(REFRESH_S)
                await self._refresh()

    def ending(self, claims: Claims) -> tuple[int, str] | None:
        """The close code and reason for a socket of `claims` if its account was disabled
        or its session ended (since its token was checked), else None."""
        if claims.user_id in self.disabled:
            return DISABLED, "this account has been disabled"
        if claims.session_id in self.ended:
            return ENDED, "the session has ended"
        return None

    async def kick(self, user: uuid.UUID, character: uuid.UUID, reason: str) -> None:
        """Close the sessions playing `character` in every api process. If NATS does not
        take it, those of this process alone are closed, and BusUnavailable says so."""
        said = contract.Kick(str(user), str(character), reason)
        try:
            await self._tell(said)
        except BusUnavailable:
            self._heard(said)
            raise

    async def disabled_now(self, user: uuid.UUID, disabled: bool, *,
                           ended: Iterable[uuid.UUID] = ()) -> None:
        """`user` was disabled (or enabled) in Postgres, and its sessions `ended`: so here
        at once, and in every other api process as soon as NATS tells it (within
        REFRESH_S if it cannot; until then they refuse the disabled user's tokens)."""
        self.ended.update(ended)
        await self._say(contract.AccountChanged(str(user), disabled), f"of user {user}")

    async def session_ended(self, user: uuid.UUID, session: uuid.UUID) -> None:
        """`session` ended in Postgres: so here at once, and in every other api process as
        soon as NATS tells it (within REFRESH_S if it cannot)."""
        await self._say(contract.SessionEnded(str(user), str(session)),
                        f"that session {session} ended")

    async def _say(self, said: contract.Admin, what: str) -> None:
        """What Postgres holds already: so here at once, then to every other api process
        (which reads it from Postgres within REFRESH_S if NATS does not carry it)."""
        self._heard(said)
        try:
            await self._tell(said)
        except BusUnavailable as exc:
            log.warning("other api processes not told %s (%s); they will read it within "
                        "%g s", what, exc, REFRESH_S)

    async def _tell(self, said: contract.Admin) -> None:
        await self._bus.publish_many(subjects.ADMIN_SESSIONS, [contract.encode(said)])

    async def _refresh(self) -> None:
        changes, known = self._changes, set(self.ended)
        try:
            found = await self._pg.transact(disabled_users)
            ended = await self._pg.transact(ended_sessions, self._remember_s)
        except Exception as exc:  # Postgres away: what is known stays, and NATS still tells
            log.warning("could not read the disabled accounts and ended sessions: %r", exc)
            return
        for session in ended - self.ended:
            self._end(None, session)
        # Forgotten once their access tokens have expired; not one heard of during the
        # read, which may not hold it yet.
        self.ended.difference_update(known - ended)
        if changes != self._changes:
            return  # read before a change it may not hold: the next read will
        for user in found - self.disabled:
            self._disable(user)
        self.disabled.intersection_update(found)

    def _disable(self, user: uuid.UUID) -> None:
        self._changes += 1
        self.disabled.add(user)
        closed = self._close(user, DISABLED, "this account has been disabled")
        if closed:
            log.info("closed %d sessions of disabled user %s", closed, user)

    def _end(self, user: uuid.UUID | None, session: uuid.UUID) -> None:
        self.ended.add(session)
        closed = self._close(user, ENDED, "the session has ended", session=session)
        if closed:
            log.info("closed %d world sessions of ended session %s", closed, session)

    async def _hear(self) -> None:
        while True:
            try:
                await self._bus.connected_once.wait()
                async with self._bus.subscription(subjects.ADMIN_SESSIONS) as heard:
                    async for message in heard:
                        said = self._refusals.decode(contract.ADMIN, message.data, "admin")
                        if said is not None:
                            self._heard(said)
            except BusUnavailable:
                await trio.sleep(1)

    def _heard(self, said: contract.Admin) -> None:
        try:
            user = uuid.UUID(said.user)
        except ValueError:
            self._refusals.refuse("admin", "invalid", "not a user id", 0)
            return
        match said:
            case contract.Kick(character=character, reason=reason):
                closed = self._close(user, KICKED, reason, character=character)
                if closed:
                    log.info("closed %d sessions of character %s: %s", closed, character,
                             reason)
            case contract.AccountChanged(disabled=True):
                self._disable(user)
            case contract.AccountChanged(disabled=False):
                self._changes += 1
                self.disabled.discard(user)
            case contract.SessionEnded(session=session):
                try:
                    self._end(user, uuid.UUID(session))
                except ValueError:
                    self._refusals.refuse("admin", "invalid", "not a session id", 0)


def _nobody(user: uuid.UUID | None, code: int, reason: str, *, character: str | None = None,
            session: uuid.UUID | None = None) -> int:
    return 0  # no edge in this process (yet): no session to close
