"""A reference client decoder of protocol v2 (docs/protocol.md, "World, protocol v2").

A client offers the subprotocol `outpost.v2`; every message, both ways, is one
MessagePack map in a binary frame. Snapshots are complete (`base` nil) or deltas
against the snapshot of tick `base`, which the server knows this client was sent.
`PlayerView` keeps what a client sees, snapshot by snapshot:

    view = PlayerView()
    for payload in binary_frames:
        message = decode(payload)
        if message["type"] == "snapshot":
            view.apply(message)          # view.players: eid -> Seen

The swarm, which must keep up with hundreds of clients on one core, reads its own
player's entry with `OwnEntry`, and checks that every snapshot decodes and follows
from the last with `Follower`: PlayerView's rules, by eid, without the positions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgspec

SUBPROTOCOL = "outpost.v2"

_DECODER = msgspec.msgpack.Decoder()
_ENCODER = msgspec.msgpack.Encoder()


def decode(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    message = _DECODER.decode(payload)
    if not isinstance(message, dict):
        raise ValueError(f"a v2 message is a map, not {type(message).__name__}")
    return message


def encode(message: object) -> bytes:
    return _ENCODER.encode(message)


class OutOfStep(Exception):
    """A delta against a tick this view does not hold: the server broke its promise."""


def snapshots(fields: int) -> msgspec.msgpack.Decoder[Any]:
    """A decoder of v2 snapshots as the protocol types them, for a game of `fields`
    replicated fields: a payload cut short, or with an entry of another shape, does not
    decode."""
    entry = tuple.__class_getitem__((int, float, float, int, *[Any] * fields))
    snapshot = msgspec.defstruct("Snapshot", [
        ("type", str), ("zone", str), ("tick", int), ("base", int | None),
        ("enter", list[tuple[int, str, str]]), ("update", list[entry]),  # type: ignore[valid-type]
        ("leave", list[int])], frozen=True)
    return msgspec.msgpack.Decoder(snapshot)


class Follower:
    """Follows one client's snapshots as cheaply as a swarm can afford for every frame of
    every client: each one decoded whole (typed), each delta checked against the tick
    and the eids this view holds. After a snapshot it could not apply it waits, as a
    client does once it has sent `resync`, for the next complete one."""

    def __init__(self, fields: int = 0) -> None:
        self._snapshots = snapshots(fields)  # the game's, as the welcome names them
        self.eids: set[int] = set()
        self.tick: int | None = None
        self.waiting = False  # for a complete snapshot: deltas are passed over

    def take(self, payload: bytes | bytearray) -> str | None:
        """Apply one snapshot; why it could not be applied, or None."""
        try:
            snapshot = self._snapshots.decode(payload)
        except msgspec.DecodeError as exc:
            return self._lost(f"does not decode: {exc}")
        entered = {entry[0] for entry in snapshot.enter}
        updated = {entry[0] for entry in snapshot.update}
        if snapshot.base is None:
            if updated != entered:
                return self._lost("a complete snapshot whose enter and update differ")
            self.eids, self.waiting = entered, False
        elif self.waiting:
            return None
        elif snapshot.base != self.tick:
            return self._lost(f"a delta against tick {snapshot.base}, the view is of "
                              f"{self.tick}")
        elif not updated <= self.eids | entered:
            return self._lost("an update of an eid the view does not hold")
        else:
            self.eids = (self.eids | entered).difference(snapshot.leave)
        self.tick = snapshot.tick
        return None

    def _lost(self, why: str) -> str:
        self.waiting = True
        return why


@dataclass
class Seen:
    eid: int
    character_id: str
    name: str
    x: float = float("nan")
    y: float = float("nan")
    seq: int = -1
    fields: tuple[Any, ...] = ()  # the game's replicated fields, in the welcome's order


class PlayerView:
    """The players a client sees, as the snapshots it was sent say."""

    def __init__(self) -> None:
        self.players: dict[int, Seen] = {}
        self.tick: int | None = None

    def apply(self, snapshot: dict[str, Any]) -> None:
        """Take one snapshot: enter, then update, then leave (docs/protocol.md)."""
        base = snapshot["base"]
        if base is None:
            self.players = {}
        elif base != self.tick:
            raise OutOfStep(f"a delta against tick {base}, but this view is of {self.tick}")
        for eid, character_id, name in snapshot["enter"]:
            self.players[eid] = Seen(eid, character_id, name)
        for eid, x, y, seq, *fields in snapshot["update"]:
            seen = self.players[eid]
            seen.x, seen.y, seen.seq, seen.fields = x, y, seq, tuple(fields)
        for eid in snapshot["leave"]:
            del self.players[eid]
        self.tick = snapshot["tick"]

    def positions(self) -> dict[str, tuple[float, float, int]]:
        """character id -> (x, y, seq)."""
        return {p.character_id: (p.x, p.y, p.seq) for p in self.players.values()}

    def fields(self) -> dict[str, tuple[Any, ...]]:
        """character id -> its replicated fields."""
        return {p.character_id: p.fields for p in self.players.values()}


def _uint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0xCC, n))
    return struct.pack(">BH", 0xCD, n) if n < 0x10000 else struct.pack(">BI", 0xCE, n)


class OwnEntry:
    """Finds one eid's entry among a snapshot's updates without decoding the snapshot:
    an update entry is an array of 4 and the game's fields (0x94 + their number), the
    eid, then two float32 (0xca and four bytes each) and the seq. The pattern is checked
    where it is found, after the `update` key."""

    def __init__(self, eid: int, fields: int = 0) -> None:
        self._needle = bytes((0x94 + fields,)) + _uint(eid) + b"\xca"

    def entry(self, payload: bytes | bytearray, start: int = 0, end: int | None = None
              ) -> tuple[int, float, float] | None:
        """(seq, x, y) of the eid's update entry, if the snapshot has one."""
        end = len(payload) if end is None else end
        at = payload.find(b"\xa6update", start, end)
        while at >= 0:
            at = payload.find(self._needle, at, end)
            if at < 0:
                return None
            x_at = at + len(self._needle)
            after = x_at + 4
            if payload[after:after + 1] == b"\xca":
                seq = _read_uint(payload, after + 5)
                if seq is None:
                    return None
                x, _, y = _XY.unpack_from(payload, x_at)
                return seq, x, y
            at += 1
        return None


_XY = struct.Struct(">fBf")  # x, y's 0xca marker, y: an entry's float32 after its eid


def _read_uint(buf: bytes | bytearray, at: int) -> int | None:
    first = buf[at]
    if first < 0x80:
        return first
    size = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(first)
    return int.from_bytes(buf[at + 1:at + 1 + size], "big") if size else None
