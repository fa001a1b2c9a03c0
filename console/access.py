"""Which accounts are disabled, as one api process knows it, and the console's word to
that process's sessions (docs/protocol.md, "Operator console").

An operator's kick or disable is said once on `admin.sessions`, heard by every api
process at once: a kick closes the sessions playing that character (4010), a disable
those of that user (4011), and from then on the user's tokens are refused. A process
that missed it (NATS away, or started later) reads the disabled accounts from Postgres
at start and every REFRESH_S, so a disable holds everywhere within that bound whatever
NATS does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import trio

from bus import subjects
from bus.connection import Bus, BusUnavailable
from persistence.postgres import Postgres
from persistence.users import disabled_users
from zones import contract

log = logging.getLogger(__name__)

REFRESH_S = 5.0
KICKED, DISABLED = 4010, 4011  # the close codes (docs/protocol.md, "Closing")

# Close the sessions of `user` (those playing `character` only, if given) with a code.
Closer = Callable[[uuid.UUID, str | None, int, str], int]


class Access:
    def __init__(self, pg: Postgres, bus: Bus, refusals: contract.Refusals) -> None:
        self._pg = pg
        self._bus = bus
        self._refusals = refusals
        # The one set every check reads (auth/tokens.py holds it too): changed in place.
        self.disabled: set[uuid.UUID] = set()
        self._close: Closer = _nobody  # the edge's, once it runs
        self._changes = 0  # accounts disabled or enabled by word: a read older is stale

    async def run(self, close: Closer, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep `disabled` current and close the sessions the console names, with
        `close` (the edge's); ready once the disabled accounts have been read (or tried)."""
        self._close = close
        await self._refresh()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hear)
            task_status.started()
            while True:
                await trio.sleep(REFRESH_S)
                await self._refresh()

    async def kick(self, user: uuid.UUID, character: uuid.UUID, reason: str) -> None:
        """Close the sessions playing `character` in every api process. If NATS does not
        take it, those of this process alone are closed, and BusUnavailable says so."""
        said = contract.Kick(str(user), str(character), reason)
        try:
            await self._tell(said)
        except BusUnavailable:
            self._heard(said)
            raise

    async def disabled_now(self, user: uuid.UUID, disabled: bool) -> None:
        """`user` was disabled (or enabled) in Postgres: so here at once, and in every
        other api process as soon as NATS tells it (within REFRESH_S if it cannot)."""
        said = contract.AccountChanged(str(user), disabled)
        self._heard(said)
        try:
            await self._tell(said)
        except BusUnavailable as exc:
            log.warning("other api processes not told of user %s (%s); they will read it "
                        "within %g s", user, exc, REFRESH_S)

    async def _tell(self, said: contract.Admin) -> None:
        await self._bus.publish_many(subjects.ADMIN_SESSIONS, [contract.encode(said)])

    async def _refresh(self) -> None:
        changes = self._changes
        try:
            found = await self._pg.transact(disabled_users)
        except Exception as exc:  # Postgres away: what is known stays, and NATS still tells
            log.warning("could not read the disabled accounts: %r", exc)
            return
        if changes != self._changes:
            return  # read before a change it may not hold: the next read will
        for user in found - self.disabled:
            self._disable(user)
        self.disabled.intersection_update(found)

    def _disable(self, user: uuid.UUID) -> None:
        self._changes += 1
        self.disabled.add(user)
        closed = self._close(user, None, DISABLED, "this account has been disabled")
        if closed:
            log.info("closed %d sessions of disabled user %s", closed, user)

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
                closed = self._close(user, character, KICKED, reason)
                if closed:
                    log.info("closed %d sessions of character %s: %s", closed, character,
                             reason)
            case contract.AccountChanged(disabled=True):
                self._disable(user)
            case contract.AccountChanged(disabled=False):
                self._changes += 1
                self.disabled.discard(user)


def _nobody(user: uuid.UUID, character: str | None, code: int, reason: str) -> int:
    return 0  # no edge in this process (yet): no session to close
