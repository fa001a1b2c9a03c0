"""permessage-deflate on the world's WebSocket (docs/protocol.md, "Compression"; RFC 7692).

Covers: a client that offers it gets it, without context takeover either way; large
snapshots arrive compressed (RSV1) and inflate, each on its own, to the snapshot an
uncompressed client gets; small messages go uncompressed; a client's compressed
messages are understood (wsproto, an independent implementation, compresses its
own); a compressed message that would inflate past the size limit closes with 4008
and bad compressed data with 1007; an offer the server cannot honour is declined
and the socket works uncompressed.

Rules: an in-process api with its zone, real sockets over loopback; wsproto as a
third-party client, the hand-made one of bench/rawws.py to look at frame bits.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from bench import v2
from bench.rawws import client_frame, close_of, open_upgraded
from server.config import Settings
from server.process import Roles, Running
from server.ws import codec
from tests.helpers import running_process, use_api_loop
from tests.world import WORLD_PATH, crowd, new_player

OFFER = "permessage-deflate; client_max_window_bits"


@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    async with running_process(settings, nursery, Roles(zones=("z1",))) as running:
        use_api_loop(running)
        yield running


async def player(world: Running) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        return await new_player(http, "Squeeze")


class Wsproto:
    """wsproto driving a trio socket: a client written by other people."""

    def __init__(self, stream: trio.SocketStream, v2_wire: bool) -> None:
        self.stream = stream
        self.v2 = v2_wire
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []
        self.extensions: list[object] = []

    @classmethod
    async def connect(cls, world: Running, token: str, *, v2_wire: bool) -> Wsproto:
        host, port = world.url.removeprefix("http://").split(":")
        client = cls(await trio.open_tcp_stream(host, int(port)), v2_wire)
        await client.send(Request(host=host, target=f"{WORLD_PATH}?token={token}",
                                  extensions=[PerMessageDeflate()],
                                  subprotocols=[v2.SUBPROTOCOL] if v2_wire else []))
        accepted = await client.next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        client.extensions = list(accepted.extensions)
        return client

    async def say(self, message: dict[str, Any]) -> None:
        """A message in the socket's wire (wsproto compresses it)."""
        await self.send(BytesMessage(v2.encode(message)) if self.v2
                        else TextMessage(orjson.dumps(message).decode()))

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event:
        with trio.fail_after(5):
            while not self.pending:
                data = await self.stream.receive_some(1 << 16)
                self.ws.receive_data(data or None)
                self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def next_message(self, kind: str) -> dict[str, Any]:
        while True:
            event = await self.next_event()
            if isinstance(event, TextMessage | BytesMessage):
                data = event.data
                message: dict[str, Any] = (v2.decode(data) if not isinstance(data, str)
                                           else orjson.loads(data))
                if message["type"] == kind:
                    return message
            assert not isinstance(event, CloseConnection), event


async def test_a_client_that_offers_deflate_gets_it_and_its_messages_are_understood(
    world: Running,
) -> None:
    me = await player(world)
    for v2_wire in (False, True):
        client = await Wsproto.connect(world, me["token"], v2_wire=v2_wire)
        async with client.stream:
            [extension] = client.extensions
            assert isinstance(extension, PerMessageDeflate)
            assert extension.server_no_context_takeover
            assert extension.client_no_context_takeover
            # wsproto compresses what it sends: the server must inflate it.
            await client.say({"type": "join", "character_id": me["character"]["id"],
                              "pad": "x" * 300})
            welcome = await client.next_message("welcome")
            assert welcome["character"]["id"] == me["character"]["id"]
            await client.say({"type": "move", "dx": 1.0, "dy": 0.0, "seq": 1})
            while True:
                snapshot = await client.next_message("snapshot")
                seqs = ([u[3] for u in snapshot["update"]] if v2_wire
                        else [p["seq"] for p in snapshot["players"]])
                if 1 in seqs:
                    break
            await client.send(CloseConnection(1000))


async def squeezed(world: Running, token: str, offer: str = OFFER
                   ) -> tuple[trio.SocketStream, bytes]:
    """A hand-made upgrade offering `offer`; the stream and the response head."""
    return await open_upgraded(world.url, f"{WORLD_PATH}?token={token}", extensions=offer)


async def test_big_snapshots_come_compressed_and_small_messages_do_not(world: Running) -> None:
    await crowd(world, 300)  # ~30 KB v1 snapshots
    me = await player(world)
    stream, head = await squeezed(world, me["token"])
    async with stream:
        assert codec.DEFLATE_ACCEPTED.encode() in head
        await stream.send_all(client_frame(orjson.dumps(
            {"type": "join", "character_id": me["character"]["id"]})))
        frames = await read_frames(stream, head.partition(b"\r\n\r\n")[2], 4)
    (first, welcome), *snapshots = frames
    assert not first & codec.RSV1, "a small message goes uncompressed"
    assert orjson.loads(welcome)["type"] == "welcome"
    for first_byte, data in snapshots:
        assert first_byte & codec.RSV1, "a big snapshot goes compressed"
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # each on its own: no takeover
        snapshot = orjson.loads(inflater.decompress(data + b"\x00\x00\xff\xff"))
        assert snapshot["type"] == "snapshot" and len(snapshot["players"]) == 301
        assert len(data) < len(orjson.dumps(snapshot)) / 2


async def read_frames(stream: trio.SocketStream, data: bytes, n: int) -> list[tuple[int, bytes]]:
    """The first byte and payload of the next `n` server frames."""
    buffer, frames = bytearray(data), list[tuple[int, bytes]]()
    with trio.fail_after(5):
        while len(frames) < n:
            while len(buffer) >= 2:
                extent = codec.payload_extent(buffer, 0)
                if extent is None or extent[0] + extent[1] > len(buffer):
                    break
                start, length = extent
                frames.append((buffer[0], bytes(buffer[start:start + length])))
                del buffer[:start + length]
            if len(frames) < n:
                buffer += await stream.receive_some(1 << 16)
    return frames[:n]


def compressed_frame(payload: bytes, opcode: int = codec.TEXT) -> bytes:
    """A client frame whose payload is compressed, RSV1 set, as permessage-deflate has it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    return client_frame(data, opcode, rsv=codec.RSV1)


@pytest.mark.parametrize(("frame", "expected"), [
    (compressed_frame(b'{"type":"ping","t":"' + b"a" * 100_000 + b'"}'),
     (4008, "message too large")),
    (client_frame(b"\xff\xfe not deflate data", rsv=codec.RSV1), (1007, "bad compressed data")),
])
async def test_a_compressed_message_that_breaks_the_rules_closes_the_socket(
    world: Running, frame: bytes, expected: tuple[int, str]
) -> None:
    me = await player(world)
    stream, head = await squeezed(world, me["token"])
    async with stream:
        assert len(frame) < 4096, "small on the wire: only inflating makes it big"
        await stream.send_all(frame)
        assert await close_of(stream, head.partition(b"\r\n\r\n")[2]) == expected


async def test_an_offer_the_server_cannot_honour_is_declined(world: Running) -> None:
    me = await player(world)
    for offer in ("permessage-deflate; server_max_window_bits=10",
                  "permessage-deflate; some_future_parameter", "x-webkit-deflate-frame"):
        stream, head = await squeezed(world, me["token"], offer)
        async with stream:
            assert head.startswith(b"HTTP/1.1 101") and b"Extensions" not in head, head
            # Compressed frames are then a protocol error: RSV1 means nothing.
            await stream.send_all(compressed_frame(b'{"type":"ping"}'))
            assert await close_of(stream, head.partition(b"\r\n\r\n")[2]) == (
                1002, "reserved bits set")
