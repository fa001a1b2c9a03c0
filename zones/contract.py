"""The messages between processes (docs/protocol.md, "Zones across processes"): api
and zone processes, and the operator console's word to every api process; one typed
value each, with one encoder and one decoder. Sans-IO.

Each message is a MessagePack map whose `kind` key names its kind and version
(`zone.join/1`): a process refuses a message it does not understand, whether it
comes from a process of another version, is malformed, or was published by anything
else that can reach NATS. A refusal is logged (its kind and why, never its content:
joins carry names) and counted for /metrics, and the process goes on; nothing a peer
sends can raise into the task that reads it.

The zone's feed (`zone.<id>.snapshot`) is the exception to the encoding: the zone
writes it by hand from the entries its snapshots are made of (zones/interest.py,
`feed`), with a `v` key for its version. It is still decoded here, as a `Feed`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Annotated, Literal, TypeVar

import msgspec

from rules.api import LARGEST, LONGEST_TEXT

log = logging.getLogger(__name__)

FEED_VERSION = 2
ROSTER_MOST = 1000  # players a roster lists at most
# ...and bytes, far under NATS's max_payload (1 MB by default; a message over it makes the
# server close the connection, the zone's lease renewals with it): a game's fields may be
# eleven texts of 200 characters, ~2.5 KB a player.
ROSTER_MOST_BYTES = 256 * 1024

Text = Annotated[str, msgspec.Meta(max_length=LONGEST_TEXT)]  # ids, names, codes, messages
Finite = Annotated[float, msgspec.Meta(ge=-LARGEST, le=LARGEST)]  # as the edge; NaN and inf not
# A position: within any zone's bounds (server/config.py keeps WORLD_BOUNDS within ±1e9),
# so that a snapshot can always write it as a float32.
Coordinate = Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Value = bool | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | Finite | Text | None


class _Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True,
               tag_field="kind"):
    """A message between processes; its tag is its kind and version."""


class JoinRequest(_Message, frozen=True, tag="zone.join/2"):
    """api -> zone (request, on zone.<id>.join): admit this character."""

    character_id: Text
    user_id: Text
    name: Text
    x: Coordinate
    y: Coordinate
    placed: bool  # put it at (x, y) whatever the zone remembers (a travel's spawn point)
    api: Text  # the api process, for its inputs and news
    session: Text  # the session in that process
    character_class: Text  # what the services know of it (rules/api.py, `Profile`)
    level: Count
    weapons: list[Text]


class Admitted(_Message, frozen=True, tag="zone.admitted/1"):
    """zone -> api (the reply): in, at (x, y), known as `eid` in snapshots."""

    tick: Count
    tick_rate: Finite
    x: Coordinate
    y: Coordinate
    eid: Count


class JoinRefused(_Message, frozen=True, tag="zone.refused/1"):
    """zone -> api (the reply): not admitted, with a docs/protocol.md error code."""

    error: Text
    message: Text


JoinReply = Admitted | JoinRefused


class Inputs(_Message, frozen=True, tag="zone.inputs/2"):
    """api -> zone (zone.<id>.input): what an api process gathered since it last sent;
    at least one a second, as a heartbeat."""

    api: Text
    moves: list[tuple[Text, Finite, Finite, Count]]  # character, dx, dy, seq
    # The game's other inputs: character, kind, seq, values (checked again by the zone).
    actions: list[tuple[Text, Text, Count, list[Value]]]
    leaves: list[tuple[Text, Text]]  # character, session


class News(_Message, frozen=True, tag="api.news/2"):
    """zone -> api (api.<id>.events): sessions of yours that were taken over (4009), and
    inputs of theirs the game refused (an `error` for the client)."""

    replaced: list[tuple[Text, Text, Text]]  # zone, character, session
    # zone, character, session, code, why, the refused input's seq
    refused: list[tuple[Text, Text, Text, Text, Text, Count]]


class TickTimes(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    p50: Finite | None
    p99: Finite | None
    max: Finite | None


class Held(_Message, frozen=True, tag="zone.held/1"):
    """A zone's key in the zone directory: who runs it, and its figures."""

    owner: Text
    players: Count
    tick: Count
    tick_rate: Finite
    tick_ms: TickTimes


class RosterAsked(_Message, frozen=True, tag="zone.roster.ask/1"):
    """operator's api -> zone (request, on zone.<id>.roster): who plays here now?"""


class Roster(_Message, frozen=True, tag="zone.roster/1"):
    """zone -> api (the reply): the zone's players, for the operator console: `total`
    of them, the first ROSTER_MOST listed (a reply stays far under NATS's 1 MB)."""

    total: Count
    # character, user, name, x, y, the game's fields by name
    players: list[tuple[Text, Text, Text, Coordinate, Coordinate, dict[Text, Value]]]


class Kick(_Message, frozen=True, tag="admin.kick/1"):
    """api -> every api process (admin.sessions): close the sessions playing
    `character` (of `user`) with 4010, saying `reason`."""

    user: Text
    character: Text
    reason: Text


class AccountChanged(_Message, frozen=True, tag="admin.account/1"):
    """api -> every api process (admin.sessions): `user` was disabled (its sessions
    close with 4011, its tokens stop working) or enabled again."""

    user: Text
    disabled: bool


class SessionEnded(_Message, frozen=True, tag="admin.session/1"):
    """api -> every api process (admin.sessions): `user`'s session `session` ended (a
    logout, or a refresh token used twice): its tokens stop working, its world sessions
    close with 4012."""

    user: Text
    session: Text


Admin = Kick | AccountChanged | SessionEnded



class Feed(msgspec.Struct, frozen=True):
    """One tick of a zone's feed: v2's snapshot with exact positions, the zone run's
    epoch and the feed's version (docs/protocol.md, "Zones across processes")."""

    v: Literal[2]  # FEED_VERSION: a feed of another version does not decode
    epoch: Text
    type: Literal["snapshot"]
    zone: Text
    tick: Count
    base: Count | None
    enter: list[tuple[Count, Text, Text]]  # eid, character, name
    # [eid, x, y, seq, *the game's fields]: checked by the mirror, which knows the game.
    update: list[list[Value]]
    leave: list[Count]
    events: list[tuple[Text, list[Count], dict[Text, Value]]]  # kind, about eids, data


_ENCODER = msgspec.msgpack.Encoder()

Peer = (JoinRequest | Admitted | JoinRefused | Inputs | News | Held | RosterAsked | Roster
        | Kick | AccountChanged | SessionEnded)


def encode(message: Peer) -> bytes:
    return _ENCODER.encode(message)


def roster_reply(total: int, players: list[tuple[str, str, str, float, float,
                                                 dict[str, Value]]]) -> bytes:
    """The encoded Roster of as many of `players` as fit in ROSTER_MOST_BYTES (`total`
    says how many there are)."""
    reply = encode(Roster(total, players))
    while len(reply) > ROSTER_MOST_BYTES:
        players = players[:len(players) * ROSTER_MOST_BYTES // len(reply)]
        reply = encode(Roster(total, players))
    return reply



# One decoder for each message a process reads.
JOIN_REQUESTS = msgspec.msgpack.Decoder(JoinRequest)
JOIN_REPLIES: msgspec.msgpack.Decoder[JoinReply] = msgspec.msgpack.Decoder(JoinReply)
INPUTS = msgspec.msgpack.Decoder(Inputs)
NEWS = msgspec.msgpack.Decoder(News)
HELD = msgspec.msgpack.Decoder(Held)
FEEDS = msgspec.msgpack.Decoder(Feed)
ROSTER_ASKED = msgspec.msgpack.Decoder(RosterAsked)
ROSTERS = msgspec.msgpack.Decoder(Roster)
ADMIN: msgspec.msgpack.Decoder[Admin] = msgspec.msgpack.Decoder(Admin)

M = TypeVar("M")


class Refusals:
    """What one process refused of what others sent it, by kind and reason."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def decode(self, decoder: msgspec.msgpack.Decoder[M], data: bytes, what: str) -> M | None:
        """`data` as `decoder` reads it, or None (logged and counted) if it cannot. `what`
        names the kind in the log and in /metrics."""
        try:
            message = decoder.decode(data)
        except msgspec.ValidationError as exc:
            self.refuse(what, "invalid", str(exc), len(data))
            return None
        except msgspec.DecodeError as exc:
            self.refuse(what, "malformed", str(exc), len(data))
            return None
        return message

    def refuse(self, what: str, reason: str, why: str, size: int) -> None:
        """Count and log a message of `what` kind refused for `reason` (`why` in words).
        A flood of them is logged at the 1st, 2nd, 4th, 8th... refusal of its kind: the
        metric has every one, and the log stays readable."""
        self.counts[what, reason] += 1
        count = self.counts[what, reason]
        if count & (count - 1) == 0:
            log.error("refused a %s message of %d bytes from another process (%s, %d so far):"
                      " %s", what, size, reason, count, why)
