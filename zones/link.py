"""How a session reaches its zone: a ZoneLink, the same whether the zone runs in this
process (a LocalZone around its actor) or in another one (zones/remote.py), and what
a link asks of the session it serves (a Member)."""

from __future__ import annotations

from typing import Protocol

from rules.api import Input
from zones.actor import Admission, Entrant, Outlet, ZoneActor


class Member(Protocol):
    """A session, as a zone link sees it."""

    @property
    def outlet(self) -> Outlet: ...

    @property
    def session_id(self) -> str: ...

    def zone_lost(self) -> None:
        """Its zone stopped answering; tell the client (it stays connected)."""

    def rejoin(self) -> None:
        """Try to join its character again (the zone may be back)."""


class ZoneLink(Protocol):
    @property
    def zone_id(self) -> str: ...

    async def join(self, entrant: Entrant, member: Member) -> Admission: ...

    def act(self, character_id: str, input: Input) -> None:
        """One of the game's inputs (a move, mostly), checked by the edge."""

    def leave(self, character_id: str, member: Member) -> None: ...


class LocalZone:
    """A zone actor of this process, behind the same link as a remote zone. It knows its
    members, so that when the actor stops while they play (its lease lost) they can be
    told and joined again wherever the zone runs next (zones/world.py)."""

    def __init__(self, actor: ZoneActor) -> None:
        self.zone_id = actor.zone_id
        self.actor = actor
        self.act = actor.act  # the hot path: no extra call
        self.members: dict[str, Member] = {}  # character id -> its member

    async def join(self, entrant: Entrant, member: Member) -> Admission:
        admission = await self.actor.join(entrant, member.outlet)
        self.members[entrant.character_id] = member
        return admission

    def leave(self, character_id: str, member: Member) -> None:
        if self.members.get(character_id) is member:
            del self.members[character_id]
        self.actor.leave(character_id, member.outlet)
