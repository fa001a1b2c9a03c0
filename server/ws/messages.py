"""What a world client's messages mean (docs/protocol.md, "World (WebSocket)"). Sans-IO.

A `Conversation` holds what judging a message needs to remember about one socket:
the rate limit, the character it plays and the last move seq it sent, and the
deadline for its first join or its next sign of life. `receive` takes one whole
message as the codec read it (opcode, payload) and says what it asks for, as a
typed value: a `Join`, `Travel`, one of the game's `Input`s or a `Ping`; a `Refusal` to
answer with an
`error` (the socket stays open); a `PingFrame` to answer with a pong; the peer's
`CloseFrame`; or a `Violation` that closes the socket. The game's inputs (rules/api.py,
`InputSpec`) are checked here, against their specs, before a zone sees one (a move,
the common case, on a path of its own), and become the `Input` the zone queues.
Nothing here does IO or imports trio, so all of it is tested with plain values
(tests/test_messages.py).

A socket speaks one `Wire`, chosen at the handshake: v1, JSON objects in text
frames; v2 (subprotocol `outpost.v2`), MessagePack maps in binary frames. Past
decoding, both are judged alike. A message is flat: its values are numbers, strings,
booleans or null, never arrays or maps. Both decoders are told so (msgspec, typed), so
a value nested a thousand deep is refused at its first level, in time linear in its
size, and nothing a client sends can make the decoders or the answer's encoder recurse
(an echoed `t` nested 300 deep once made orjson raise, and ended the process).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import orjson

from rules.api import LARGEST, MOVE, ZONE_MESSAGES, Input, InputSpec, checked
from server.ws import codec
from server.ws.codec import TokenBucket
from zones.interest import V1, V2

SUBPROTOCOL_V2 = "outpost.v2"
WALKING = {"move": MOVE}  # the inputs of a game of walking (rules/walk.py)


@dataclass(frozen=True, slots=True)
class Join:
    character_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Travel:
    zone: str


@dataclass(frozen=True, slots=True)
class Ping:
    t: Any  # a number or a short string (or null), echoed as it came (Any, not object:
    # mypyc cannot build a dataclass field of type object)


@dataclass(frozen=True, slots=True)
class Resync:
    """Send a complete snapshot next: the client could not apply what it was sent."""


@dataclass(frozen=True, slots=True)
class Renew:
    """A fresh access token of the socket's own session: it lives until that one expires
    (docs/protocol.md, "Outpost, renewing the token")."""

    token: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Answer with an `error` message; the socket stays open."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PingFrame:
    """A WebSocket ping: answer with a pong carrying `payload`."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseFrame:
    """The peer's close frame (its code, or 1000 when it gave none)."""

    code: int


@dataclass(frozen=True, slots=True)
class Violation:
    """Close the socket with `code` and `reason`."""

    code: int
    reason: str


Request = Join | Travel | Input | Ping | Resync | Renew
Received = Request | Refusal | PingFrame | CloseFrame | Violation | None


@dataclass(frozen=True)
class Wire:
    """How the messages of one protocol version travel."""

    name: str  # V1 or V2 (zones/interest.py)
    opcode: int  # the frames its messages come in
    wrong_frame: Refusal  # the answer to a frame of the other kind
    decode: Callable[[bytes], object | Refusal | Violation]
    encode: Callable[[object], bytes]


# A message as the decoders read it; integers in 64 bits (what orjson writes back, and
# what a double can stand in for).
Flat = dict[str, bool | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | float | str
            | None]
MAX_PING_T = 64  # characters of a ping's `t`, when it is a string
MAX_TOKEN = 2048  # characters of a renewed token: Outpost's are ~300
_JSON = msgspec.json.Decoder(Flat)
_MSGPACK = msgspec.msgpack.Decoder(Flat)
_MSGPACK_OUT = msgspec.msgpack.Encoder()
_NOT_FLAT = Refusal("validation_failed",
                    "a message is one flat object: its values are numbers (integers of 64 "
                    "bits at most), strings, booleans or null")


def _json(payload: bytes) -> object | Refusal | Violation:
    try:
        return _JSON.decode(payload)
    except msgspec.ValidationError:
        # Well-formed JSON: an object with a nested or out-of-range value, or no object.
        if not payload.lstrip().startswith(b"{"):
            return _NOT_AN_OBJECT
        return _not_finite(payload) or _NOT_FLAT
    except msgspec.DecodeError:
        return _not_json(payload)


def _msgpack(payload: bytes) -> object | Refusal:
    try:
        return _MSGPACK.decode(payload)
    except msgspec.ValidationError:
        first = payload[0]
        return _NOT_FLAT if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF) else _NOT_AN_OBJECT
    except msgspec.DecodeError:
        return Refusal("bad_json", "the message is not valid MessagePack")


JSON = Wire(V1, codec.TEXT, Refusal("validation_failed", "send text frames of JSON"),
            _json, orjson.dumps)
MSGPACK = Wire(V2, codec.BINARY,
               Refusal("validation_failed", "send binary frames of MessagePack"),
               _msgpack, _MSGPACK_OUT.encode)


def wire_for(offered: str | None) -> Wire:
    """The wire of a socket whose upgrade offered these subprotocols (comma-separated)."""
    names = {p.strip() for p in (offered or "").split(",")}
    return MSGPACK if SUBPROTOCOL_V2 in names else JSON


class Conversation:
    __slots__ = ("_bucket", "_data", "_idle_timeout_s", "_inputs", "_kinds", "character_id",
                 "deadline", "last_seq", "wire")

    def __init__(self, *, max_messages_per_s: float, join_timeout_s: float,
                 idle_timeout_s: float, now: float, wire: Wire = JSON,
                 inputs: Mapping[str, InputSpec] = WALKING) -> None:
        self.wire = wire
        self._inputs = inputs  # the game's, by message type
        self._kinds = ", ".join((*ZONE_MESSAGES, *inputs))
        self._data = wire.opcode
        self._bucket = TokenBucket(max_messages_per_s, now)
        self._idle_timeout_s = idle_timeout_s
        self.deadline = now + join_timeout_s  # no join, or idle, past this
        self.character_id: str | None = None  # the character this socket plays
        self.last_seq = -1

    def welcomed(self, character_id: str, now: float) -> None:
        """The session was welcomed with `character_id` (seq goes on for the same one)."""
        if character_id != self.character_id:
            self.last_seq = -1
        self.character_id = character_id
        self.deadline = now + self._idle_timeout_s

    def left(self) -> None:
        self.character_id = None
        self.last_seq = -1

    def expired(self, now: float) -> Violation | None:
        """The close a session past its deadline gets; None before it."""
        if now < self.deadline:
            return None
        return Violation(4008, "idle for too long" if self.character_id else "no join in time")

    def receive(self, opcode: int, payload: bytes, now: float) -> Received:
        """What one whole message asks for (None: nothing to do). The common case
        (a move, thousands a second) comes first."""
        if opcode != self._data:
            return self._control(opcode, payload, now)
        refused = self._admit(now)
        if refused is not None:
            return refused
        body = self.wire.decode(payload)
        if type(body) is not dict:
            return body if isinstance(body, Refusal | Violation) else _NOT_AN_OBJECT
        kind = body.get("type")
        if kind == "move" and "move" in self._inputs:
            return self._moved(body.get("dx"), body.get("dy"), body.get("seq"))
        if kind == "join":
            return _join(body)
        if kind == "travel":
            return _travel(body)
        if kind == "ping":
            return _ping(body.get("t"))
        if kind == "resync":
            return _RESYNC
        if kind == "renew":
            return _renew(body.get("token"))
        spec = self._inputs.get(kind) if isinstance(kind, str) else None
        if spec is not None:
            return self._act(spec, body)
        return self._unknown_kind()

    def move(self, seq: int, dx: float, dy: float, now: float) -> Received:
        """A move the hub's reader decoded (server/ws/wire.py, `read_ready`): judged as
        `receive` judges the same message."""
        refused = self._admit(now)
        if refused is not None:
            return refused
        if "move" not in self._inputs:
            return self._unknown_kind()
        return self._moved(dx, dy, seq)

    def _admit(self, now: float) -> Violation | None:
        """Count a data message toward the rate; a sign of life once joined."""
        if not self._bucket.take(now):
            return Violation(4008, "too many messages")
        if self.character_id is not None:
            self.deadline = now + self._idle_timeout_s
        return None

    def _unknown_kind(self) -> Refusal:
        return Refusal("validation_failed", f"type must be one of: {self._kinds}")

    def _control(self, opcode: int, payload: bytes, now: float) -> Received:
        if opcode == codec.CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
            return CloseFrame(code if _sendable(code) else 1000)
        if opcode == codec.PING:
            return PingFrame(payload)
        if opcode == codec.PONG:
            return None
        if not self._bucket.take(now):  # a data frame of the other wire's kind
            return Violation(4008, "too many messages")
        if opcode == codec.TEXT and _not_utf8(payload):
            return _NOT_UTF8
        return self.wire.wrong_frame

    def _moved(self, dx: object, dy: object, seq: object) -> Input | Refusal:
        if self.character_id is None:
            return Refusal("not_joined", "join a character before moving")
        # Numbers by exact type (a bool is no number), within ±LARGEST (NaN is not).
        if not ((type(dx) is float or type(dx) is int) and -LARGEST <= dx <= LARGEST
                and (type(dy) is float or type(dy) is int) and -LARGEST <= dy <= LARGEST):
            return Refusal("validation_failed", f"dx and dy must be finite numbers from "
                                                f"{-LARGEST:g} to {LARGEST:g}")
        checked_seq = self._next_seq(seq)
        if isinstance(checked_seq, Refusal):
            return checked_seq
        self.last_seq = checked_seq
        return Input("move", checked_seq, (float(dx), float(dy)))

    def _act(self, spec: InputSpec, body: dict[str, object]) -> Input | Refusal:
        if self.character_id is None:
            return Refusal("not_joined", f"join a character before sending {spec.kind}")
        seq = self._next_seq(body.get("seq"))
        if isinstance(seq, Refusal):
            return seq
        values = checked(spec, body)
        if isinstance(values, str):
            return Refusal("validation_failed", values)
        self.last_seq = seq
        return Input(spec.kind, seq, values)

    def _next_seq(self, seq: object) -> int | Refusal:
        """`seq` if it may number this socket's next input, of whatever type: an integer
        greater than the last (docs/protocol.md, "Outpost, the game's inputs")."""
        if type(seq) is not int or seq < 0:
            return Refusal("validation_failed", "seq must be a non-negative integer")
        if seq <= self.last_seq:
            return Refusal("validation_failed", f"seq must increase (last was {self.last_seq})")
        return seq


def _sendable(code: int) -> bool:
    """A close code that may travel in a close frame (RFC 6455 section 7.4): the ones
    that mean "no code" or "no close frame" (1005, 1006, 1015) may not."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


_NOT_AN_OBJECT = Refusal("bad_json", "the message must be an object (a map)")


def _join(body: dict[str, object]) -> Join | Refusal:
    raw = body.get("character_id")
    try:
        return Join(uuid.UUID(raw)) if isinstance(raw, str) else _BAD_CHARACTER
    except ValueError:
        return _BAD_CHARACTER


_BAD_CHARACTER = Refusal("validation_failed", "character_id must be a character's uuid")


def _ping(t: object) -> Ping | Refusal:
    if isinstance(t, bool) or (isinstance(t, str) and len(t) > MAX_PING_T):
        return _BAD_PING
    return Ping(t)


_BAD_PING = Refusal("validation_failed",
                    f"t must be a number or a string of at most {MAX_PING_T} characters")
_RESYNC = Resync()


def _renew(token: object) -> Renew | Refusal:
    if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN:
        return Renew(token)
    return _BAD_TOKEN


_BAD_TOKEN = Refusal("validation_failed",
                     f"token must be an access token, a string of at most {MAX_TOKEN} characters")


def _travel(body: dict[str, object]) -> Travel | Refusal:
    zone = body.get("zone")
    if not isinstance(zone, str) or not zone:
        return Refusal("validation_failed", "zone must be a zone id")
    return Travel(zone)


def _not_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return True
    return False


_NOT_UTF8 = Violation(1007, "text must be UTF-8")  # RFC 6455 8.1: fail the connection


def _not_json(payload: bytes) -> Refusal | Violation:
    """The answer to a message that is not JSON: text that is not UTF-8 closes the
    socket; NaN or Infinity is JSON-ish (the stdlib reads it) but not a finite number."""
    if _not_utf8(payload):
        return _NOT_UTF8
    return _not_finite(payload) or Refusal("bad_json", "the message is not valid JSON")


def _not_finite(payload: bytes) -> Refusal | None:
    """`validation_failed` if `payload` is a flat object the stdlib reads, whose numbers
    are not all finite (NaN, Infinity, or too large for a double); None otherwise. Only
    a flat object is handed to the stdlib, whose parser recurses: it is never nested."""
    if payload.count(b"[") or payload.count(b"{") > 1:
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    numbers = [v for v in body.values() if type(v) is float] if type(body) is dict else []
    return _NOT_FINITE if any(n - n != 0 for n in numbers) else None


_NOT_FINITE = Refusal("validation_failed", "numbers must be finite")


# What the server sends, in the socket's wire.

def error(wire: Wire, code: str, message: str, seq: int | None = None) -> bytes:
    """An `error`; with the `seq` of the input it refuses, when the game refused one."""
    body: dict[str, object] = {"type": "error", "code": code, "message": message}
    if seq is not None:
        body["seq"] = seq
    return wire.encode(body)


def pong(wire: Wire, t: object) -> bytes:
    return wire.encode({"type": "pong", "t": t})


def welcome(wire: Wire, zone_id: str, tick: int, tick_rate_hz: float,
            character: dict[str, object], eid: int, fields: tuple[str, ...] = ()) -> bytes:
    """The welcome; in v2 also the player's eid and the names of the game's replicated
    fields, which follow [eid, x, y, seq] in every update entry, in that order."""
    body: dict[str, object] = {"type": "welcome", "zone": zone_id, "tick": tick,
                               "tick_rate": tick_rate_hz, "character": character}
    if wire is MSGPACK:
        body["eid"] = eid
        body["fields"] = list(fields)
    return wire.encode(body)
