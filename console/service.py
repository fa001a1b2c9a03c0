"""What an operator may see and do (docs/protocol.md, "Operator console"): every call
names the operator, checks the role first (403 otherwise), and logs what it did with
the operator's id."""

from __future__ import annotations

import logging
import uuid

import asyncpg

from auth.sessions import end_user_sessions
from bus.connection import BusUnavailable
from characters.service import character_json
from characters.store import Character, get_character, list_characters
from console.access import Access
from persistence.errors import Conflict, Forbidden, NotFound, Unavailable, ValidationFailed
from persistence.postgres import Postgres
from persistence.users import User, find_user, get_user, set_disabled
from zones.world import World

log = logging.getLogger(__name__)

LONGEST_NAME = 254  # an id, a username or an email: what `who` may be


class Console:
    def __init__(self, pg: Postgres, world: World, access: Access) -> None:
        self._pg = pg
        self._world = world
        self._access = access

    async def operator(self, user_id: uuid.UUID) -> uuid.UUID:
        """`user_id`, if it is an operator's (read now: a role taken back counts at
        once); Forbidden otherwise."""
        user = await self._pg.transact(get_user, user_id)
        if user is None or not user.operator or user.disabled_at is not None:
            raise Forbidden("only operators may use the console")
        return user_id

    def zones(self) -> list[dict[str, object]]:
        return self._world.zone_report()

    async def players(self, zone_id: str) -> dict[str, object]:
        if not self._world.is_up(zone_id):
            raise NotFound(f"zone {zone_id} does not run")
        roster = await self._world.roster(zone_id)
        return {"zone": zone_id, "total": roster.total, "players": [
            {"character_id": c, "user_id": u, "name": name, "x": x, "y": y, "fields": fields}
            for c, u, name, x, y, fields in roster.players]}

    async def kick(self, operator: uuid.UUID, character_id: str) -> dict[str, object]:
        """Close the sessions playing the character, wherever they are (4010); its zone
        saves its position as it leaves."""
        character = await self._character(character_id)
        try:
            await self._access.kick(character.user_id, character.id, "removed by an operator")
        except BusUnavailable as exc:
            log.warning("operator %s kicked character %s from this process only: %s",
                        operator, character.id, exc)
            raise Unavailable("NATS is away: only this api process's sessions of the "
                              "character were closed; try again") from exc
        log.info("operator %s kicked character %s", operator, character.id)
        return {"kicked": str(character.id)}

    async def move(self, operator: uuid.UUID, character_id: str,
                   zone_id: object) -> dict[str, object]:
        """Put the character at `zone_id`'s spawn point (the zone must run), and close
        any session playing it elsewhere: its next join finds it there."""
        if not isinstance(zone_id, str) or not zone_id:
            raise ValidationFailed("name the zone to move it to", fields={"zone": "required"})
        character = await self._character(character_id)
        if not self._world.is_up(zone_id):
            raise Conflict(f"zone {zone_id} does not run: move it to one that does",
                           fields={"zone": "not running"})
        await self._world.place(character, zone_id)
        log.info("operator %s moved character %s from %s to %s", operator, character.id,
                 character.zone_id, zone_id)
        try:
            await self._access.kick(character.user_id, character.id,
                                    f"moved to {zone_id} by an operator")
        except BusUnavailable as exc:
            log.warning("character %s moved, but a session playing it in another api "
                        "process may go on where it was (%s)", character.id, exc)
        moved = await self._character(character_id)
        return character_json(moved)

    async def account(self, who: str) -> dict[str, object]:
        """The account named `who` (id, username or email), its role and state, and its
        characters with whether each one's zone runs."""
        user = await self._user(who)
        characters = await self._pg.transact(list_characters, user.id)
        return {"user_id": str(user.id), "username": user.username, "email": user.email,
                "operator": user.operator, "disabled": user.disabled_at is not None,
                "characters": [{**character_json(c), "zone_up": self._world.is_up(c.zone_id)}
                               for c in characters]}

    async def disable(self, operator: uuid.UUID, who: str, *, disabled: bool) -> dict[str, object]:
        """Disable the account (its sessions end and its world sockets close, its tokens
        stop working, its logins are refused) or enable it again (its player logs in
        again: the sessions it had stay ended)."""
        user = await self._user(who)
        if user.id == operator and disabled:
            raise ValidationFailed("an operator cannot disable their own account",
                                   fields={"user": "yours"})
        changed, ended = await self._pg.transact(_set_disabled, user.id, disabled)
        if changed is None:
            raise NotFound("no such account")
        await self._access.disabled_now(user.id, disabled, ended=ended)
        log.info("operator %s %s user %s", operator, "disabled" if disabled else "enabled",
                 user.id)
        return await self.account(str(user.id))

    async def _user(self, who: str) -> User:
        user = None if len(who) > LONGEST_NAME else await self._pg.transact(find_user, who)
        if user is None:
            raise NotFound("no such account")
        return user

    async def _character(self, character_id: str) -> Character:
        try:
            key = uuid.UUID(character_id)
        except ValueError:
            raise NotFound("no such character") from None
        character = await self._pg.transact(get_character, key)
        if character is None:
            raise NotFound("no such character")
        return character


async def _set_disabled(conn: asyncpg.Connection, user_id: uuid.UUID, disabled: bool
                        ) -> tuple[User | None, list[uuid.UUID]]:
    """Disable (and end every session of) the account, or enable it: the user (None if
    there is none) and the sessions ended."""
    changed = await set_disabled(conn, user_id, disabled)
    ended = await end_user_sessions(conn, user_id) if changed and disabled else []
    return changed, ended
