"""How snapshots are written (docs/protocol.md, "snapshot", v1 and v2). Sans-IO.

A snapshot is assembled from pieces encoded once: each avatar's entries (written
when it changes) and, per tick, each cell's run of entries. Assembling one is then
a header and a few joins of bytes, whatever the number of clients that get it.

v2 is MessagePack written by hand, because its positions are float32 (no
MessagePack library writes those for Python floats) and because a snapshot is
mostly other snapshots' entries: a map of seven keys, whose arrays are a count
followed by entries already encoded. The zones' own feed between processes
(zones/remote.py) is the same layout with float64 positions, so that a mirror
holds exactly the zone's numbers.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import msgspec
import orjson

NIL = b"\xc0"
Scalar = bool | int | float | str | None  # a replicated field's value (rules/api.py)
_SCALAR = msgspec.msgpack.Encoder()
_XY32 = struct.Struct(">BfBf")  # float32 x, y as MessagePack: 0xca, 4 bytes, 0xca, 4 bytes
_XY64 = struct.Struct(">BdBd")  # float64: 0xcb, 8 bytes each
_U8, _U16, _U32, _U64 = (struct.Struct(f">B{c}") for c in "BHIQ")


def uint(n: int) -> bytes:
    """A non-negative integer in MessagePack's shortest form."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return _U8.pack(0xCC, n)
    if n < 0x10000:
        return _U16.pack(0xCD, n)
    if n < 0x100000000:
        return _U32.pack(0xCE, n)
    return _U64.pack(0xCF, n)


_SHORT_UINTS = [uint(n) for n in range(1 << 16)]  # seqs and eids, looked up in a tick


def short_uint(n: int) -> bytes:
    """uint(n), from a table for the numbers a tick mostly writes."""
    return _SHORT_UINTS[n] if n < 0x10000 else uint(n)


def text(value: str) -> bytes:
    raw = value.encode()
    n = len(raw)
    if n < 32:
        return bytes((0xA0 | n,)) + raw
    if n < 0x100:
        return bytes((0xD9, n)) + raw
    return struct.pack(">BH", 0xDA, n) + raw


def array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return struct.pack(">BH", 0xDC, n)
    return struct.pack(">BI", 0xDD, n)


def map_header(n: int) -> bytes:
    return bytes((0x80 | n,))  # our maps are small


def update_head(eid: int, fields: int = 0) -> bytes:
    """What every [eid, x, y, seq, *fields] of `eid` begins with (`fields` of them)."""
    return bytes((0x94 + fields,)) + uint(eid)


def scalars(values: Sequence[Scalar]) -> bytes:
    """Replicated fields' values, one after another, each in its shortest form."""
    out = b""
    for value in values:
        out += short_uint(value) if type(value) is int and 0 <= value < 0x10000 \
            else _SCALAR.encode(value)
    return out


def update_entry(head: bytes, x: float, y: float, seq: int, *, exact: bool = False) -> bytes:
    """[eid, x, y, seq] after its `head`. Positions float32 (float64 if `exact`)."""
    xy = _XY64.pack(0xCB, x, 0xCB, y) if exact else _XY32.pack(0xCA, x, 0xCA, y)
    return head + xy + short_uint(seq)


pack_xy32 = _XY32.pack  # for the tick's hot loop: pack_xy32(0xCA, x, 0xCA, y)


def enter_entry(eid: bytes, character_id: str, name: str) -> bytes:
    """[eid, character_id, name]; `eid` already encoded."""
    return b"\x93" + eid + text(character_id) + text(name)


def v1_entry(character_id: str, name: str, x: float, y: float, seq: int,
             fields: Mapping[str, Scalar] | None = None) -> bytes:
    entry: dict[str, Scalar] = {"id": character_id, "name": name, "x": x, "y": y,
                                "seq": seq}
    if fields:
        entry.update(fields)
    return orjson.dumps(entry)


def packed(value: object) -> bytes:
    """Any plain value (lists, maps, scalars) as MessagePack."""
    return _SCALAR.encode(value)


def events_message(wire_v1: bool, zone_id: str, tick: int,
                   events: Sequence[Mapping[str, Scalar]]) -> bytes:
    """An `events` message (docs/protocol.md, "events"): v1 JSON, or v2 MessagePack."""
    body = {"type": "events", "zone": zone_id, "tick": tick, "events": events}
    return orjson.dumps(body) if wire_v1 else _SCALAR.encode(body)


class Run:
    """Entries of one kind, joined: what a cell contributes to a snapshot's array."""

    __slots__ = ("count", "data")

    def __init__(self, count: int, data: bytes) -> None:
        self.count = count
        self.data = data

    @classmethod
    def of(cls, entries: Sequence[bytes]) -> Run:
        return cls(len(entries), b"".join(entries))


EMPTY = Run(0, b"")


def add_array(pieces: list[bytes], runs: Sequence[Run]) -> None:
    """Append to `pieces` a MessagePack array of every entry of `runs`: its header and
    the runs as they are, for the one join of the whole snapshot (each view's runs are
    copied once, not joined into an array first and copied again)."""
    at = len(pieces)
    pieces.append(b"")
    count = 0
    for run in runs:
        count += run.count
        pieces.append(run.data)
    pieces[at] = array_header(count)


class Headers:
    """The fixed parts of one zone's snapshots, encoded once."""

    def __init__(self, zone_id: str) -> None:
        self._v2 = map_header(7) + text("type") + text("snapshot") + text("zone") + \
            text(zone_id) + text("tick")
        self._v1 = orjson.dumps({"type": "snapshot", "zone": zone_id})[:-1] + b',"tick":'

    def v2(self, tick: int, base: int | None, enter: Sequence[Run], update: Sequence[Run],
           leave: Sequence[int]) -> bytes:
        pieces = [self._v2, uint(tick), b"\xa4base", NIL if base is None else uint(base),
                  b"\xa5enter"]
        add_array(pieces, enter)
        pieces.append(b"\xa6update")
        add_array(pieces, update)
        pieces += (b"\xa5leave", array_header(len(leave)))
        for eid in leave:
            pieces.append(uint(eid))
        return b"".join(pieces)

    def v1(self, tick: int, runs: Sequence[bytes]) -> bytes:
        """`runs`: comma-joined v1 entries, one run per cell (empty ones left out)."""
        return b"%s%d,\"players\":[%s]}" % (self._v1, tick, b",".join(runs))
