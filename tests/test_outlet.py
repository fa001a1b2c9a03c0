"""Unit tests of server/ws/outlet.py, the one writer of a world socket: snapshots and control
messages as unmasked frames, a reader that stops reading (snapshots skipped, control
messages kept, no interleaved bytes), the slow-reader drop after `slow_close_s`, close()
after queued data, and FrameCache.

Rules: a real socket.socketpair(), both ends non-blocking with 4 KiB kernel buffers so
that a large snapshot fills them at once; the test holds the client end and parses what
arrives frame by frame. `outlet.run()` runs in a nursery the test cancels at the end.
Time is trio's MockClock with autojump (`autojump_clock`): sleeps are in mock time and
every wait is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
import trio

from server.ws import codec as ws
from server.ws.outlet import FrameCache, Outlet, fan_out
from server.ws.stats import WireStats
from zones.interest import V1, V2, Base, View

BUFFER_BYTES = 4096


class Payload:
    """A snapshot that is the same bytes in every form: what the outlet does with forms
    is tested with Forms below."""

    zone = "z1"

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def encoded(self, wire: str, since: Base | None) -> tuple[bytes, Base]:
        return self.payload, ("payload", 0)

    def events(self, wire: str) -> bytes | None:
        return None  # nothing happened


Frame = tuple[int, bytes]


def big(n: int) -> bytes:
    """A 200 KB snapshot payload, distinct for each `n`."""
    return b'{"type":"snapshot","tick":%d,"pad":"%s"}' % (n, b"x" * 200_000)


def parse(data: bytes | bytearray) -> tuple[list[Frame], int]:
    """The whole server frames at the start of `data`, and how many bytes follow them.
    Every frame must be final, unmasked, with no reserved bits."""
    frames: list[Frame] = []
    at = 0
    while len(data) - at >= 2:
        first, second = data[at], data[at + 1]
        assert first & 0xF0 == 0x80, f"bad first byte {first:#x} at {at}"
        assert not second & 0x80, "server frames are unmasked"
        length, start = second & 0x7F, at + 2
        if length == 126:
            (length,), start = struct.unpack_from("!H", data, at + 2), at + 4
        elif length == 127:
            (length,), start = struct.unpack_from("!Q", data, at + 2), at + 10
        if len(data) < start + length:
            break
        frames.append((first & 0x0F, bytes(data[start:start + length])))
        at = start + length
    return frames, len(data) - at


class Peer:
    """The client end of the pair: collects what arrives."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()

    def drain(self) -> None:
        """Read everything the kernel holds now."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.data += chunk

    async def frames(self, n: int, within: float = 10.0) -> list[Frame]:
        """Read until `n` whole frames have arrived; exactly those, nothing left over."""
        with trio.fail_after(within):
            while len(parse(self.data)[0]) < n:
                await trio.lowlevel.wait_readable(self.sock)
                self.drain()
        assert parse(self.data) == (parse(self.data)[0][:n], 0)
        return parse(self.data)[0]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the outlet's end, the client's end)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        for sock in (ours, theirs):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
        yield ours, theirs


@asynccontextmanager
async def running(outlet: Outlet) -> AsyncIterator[trio.Event]:
    """`outlet.run()` in a nursery, cancelled when the block ends; the event is set if
    run() returns by itself."""
    returned = trio.Event()

    async def run() -> None:
        await outlet.run()
        returned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield returned
        nursery.cancel_scope.cancel()


async def stay_behind(outlet: Outlet, slow_close_s: float) -> None:
    """Fan snapshots out to an outlet whose reader never reads, every 0.25 s of mock time
    and once just before `slow_close_s`, checking it is kept; then once past it."""
    start = trio.current_time()
    outlet.snapshot(Payload(big(0)))  # the kernel takes a few KB of it: behind from now on
    for i, at in enumerate((0.25, 0.5, 0.75, 0.95), 1):
        await trio.sleep_until(start + at * slow_close_s)
        outlet.snapshot(Payload(big(i)))
        assert not outlet.ended.is_set()
    await trio.sleep_until(start + 1.05 * slow_close_s)
    outlet.snapshot(Payload(big(5)))


async def test_snapshots_and_control_messages_arrive_as_text_frames_in_order(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    peer = Peer(client)
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=10)
    snapshot = b'{"type":"snapshot","tick":1,"players":[%s]}' % b",".join([b"{}"] * 100)
    controls = [b'{"type":"welcome"}', b'{"type":"pong","t":1}', b'{"type":"error"}']
    async with running(outlet):
        outlet.snapshot(Payload(snapshot))
        for control in controls:
            outlet.send(control)
        frames = await peer.frames(4)
        assert not outlet.ended.is_set()
    assert peer.data.startswith(b"\x81\x7e" + struct.pack("!H", len(snapshot)) + snapshot)
    assert frames == [(ws.TEXT, snapshot)] + [(ws.TEXT, control) for control in controls]
    assert outlet.skipped_snapshots == 0


async def test_a_reader_that_stops_reading_skips_snapshots_but_keeps_control_messages(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    peer = Peer(client)
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=60)
    payloads = [big(n) for n in range(40)]
    pong, error = b'{"type":"pong","t":7}', b'{"type":"error"}'
    async with running(outlet):
        for n, payload in enumerate(payloads):
            outlet.snapshot(Payload(payload))
            if n == 10:
                outlet.send(pong)
            if n == 20:
                outlet.send(error, ws.BINARY)
            await trio.sleep(0.05)
        # The first is being written, the newest waits; the 38 between were skipped.
        assert outlet.skipped_snapshots == 38
        frames = await peer.frames(4)  # the client reads at last
        outlet.snapshot(Payload(b'{"tick":41}'))  # caught up: written straight away again
        assert (await peer.frames(5))[4] == (ws.TEXT, b'{"tick":41}')
        assert not outlet.ended.is_set()
    assert frames == [(ws.TEXT, payloads[0]), (ws.TEXT, pong), (ws.BINARY, error),
                      (ws.TEXT, payloads[-1])]


async def test_pongs_to_a_ping_flood_keep_only_the_newest_while_the_reader_is_behind(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    peer = Peer(client)
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=60)
    async with running(outlet):
        outlet.pong(b"first")  # the socket is idle: written at once
        outlet.snapshot(Payload(big(0)))  # fills the kernel's buffers: behind from now on
        for n in range(1000):
            outlet.pong(b"%d" % n)
        frames = await peer.frames(3)  # the client reads at last
    assert frames == [(ws.PONG, b"first"), (ws.TEXT, big(0)), (ws.PONG, b"999")]


async def test_a_reader_behind_for_longer_than_slow_close_s_is_dropped(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=2.0)
    async with running(outlet):
        await stay_behind(outlet, 2.0)
        assert outlet.ended.is_set()
        outlet.send(b"too late")
        outlet.close(1000, "too late")
    peer = Peer(client)
    peer.drain()
    assert 0 < len(peer.data) < len(ws.frame(big(0)))
    assert peer.data == ws.frame(big(0))[:len(peer.data)]  # part of the first, nothing else


async def test_after_a_slow_drop_the_writer_returns_cleanly(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=2.0)
    async with running(outlet) as returned:
        await stay_behind(outlet, 2.0)
        assert outlet.ended.is_set()
        with trio.move_on_after(5):
            await returned.wait()  # Session._write waits on run() to end the session
        Peer(client).drain()  # the client reads at last: the socket turns writable
        with trio.fail_after(5):
            await returned.wait()


async def test_close_sends_a_close_frame_after_queued_data_then_ends(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    peer = Peer(client)
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=60)
    first, error = big(0), b'{"type":"error"}'
    async with running(outlet) as returned:
        outlet.snapshot(Payload(first))  # partly written
        outlet.send(error)
        outlet.snapshot(Payload(big(1)))  # not started yet: stale once closing
        outlet.close(4008, "idle for too long")
        outlet.send(b"after close")
        outlet.snapshot(Payload(big(2)))
        assert not outlet.ended.is_set()
        frames = await peer.frames(3)
        with trio.fail_after(5):
            await returned.wait()
    assert outlet.ended.is_set()
    assert frames == [(ws.TEXT, first), (ws.TEXT, error),
                      (ws.CLOSE, struct.pack("!H", 4008) + b"idle for too long")]
    assert frames[2][1][:2] == (4008).to_bytes(2, "big")


async def test_close_of_an_idle_outlet_ends_it_at_once(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    peer = Peer(client)
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=60)
    async with running(outlet) as returned:
        outlet.replaced()
        with trio.fail_after(1):
            await returned.wait()
        assert await peer.frames(1) == [(ws.CLOSE, ws.close_frame(4009, "replaced by a newer "
                                                                  "session")[2:])]


def test_frame_cache_reuses_the_frame_of_the_same_payload_object() -> None:
    cache = FrameCache()
    payload = b'{"type":"snapshot","tick":1}'
    framed = cache.frame(payload, ws.TEXT)
    assert framed == ws.frame(payload)
    assert cache.frame(payload, ws.TEXT) is framed
    equal = bytes(bytearray(payload))  # same bytes, another object: framed anew
    assert cache.frame(equal, ws.TEXT) is not framed
    assert cache.frame(equal, ws.TEXT) == framed
    assert cache.frame(payload, ws.TEXT) is framed, "still cached after another payload"
    assert cache.frame(b"\x81\x01", ws.BINARY) == ws.frame(b"\x81\x01", ws.BINARY)


class Forms:
    """A snapshot of `tick` that says which form the outlet chose: a delta when the last
    one it sent was the tick before, else complete."""

    zone = "z1"

    def __init__(self, tick: int) -> None:
        self.tick = tick

    def encoded(self, wire: str, since: Base | None) -> tuple[bytes, Base]:
        form = b"delta" if since == ("block", self.tick - 1) else b"complete"
        return b"%s %d" % (form, self.tick), ("block", self.tick)

    def events(self, wire: str) -> bytes | None:
        return None  # nothing happened


async def test_a_member_that_skipped_a_snapshot_gets_a_complete_one_next(
    pair: tuple[socket.socket, socket.socket], autojump_clock: trio.testing.MockClock,
) -> None:
    sock, client = pair
    peer = Peer(client)
    outlet = Outlet(sock, FrameCache(), stats=WireStats(), slow_close_s=60, wire=V2)
    async with running(outlet):
        outlet.snapshot(Forms(1))
        outlet.snapshot(Forms(2))
        assert await peer.frames(2) == [(ws.BINARY, b"complete 1"), (ws.BINARY, b"delta 2")]
        outlet.send(big(0), ws.BINARY)  # the reader stops reading: behind from now on
        outlet.snapshot(Forms(3))  # waits, not started yet...
        outlet.snapshot(Forms(4))  # ...so 3 is skipped, never sent
        outlet.snapshot(Forms(5))
        frames = await peer.frames(4)
    assert frames[2:] == [(ws.BINARY, big(0)), (ws.BINARY, b"complete 5")]
    assert outlet.skipped_snapshots == 2


class Counted(Forms):
    """Forms that count how often each form is made, and say which wire they were made
    for; a v2 member is told of an event."""

    def __init__(self, tick: int) -> None:
        super().__init__(tick)
        self.made: list[tuple[str, Base | None]] = []

    def encoded(self, wire: str, since: Base | None) -> tuple[bytes, Base]:
        self.made.append((wire, since))
        payload, base = super().encoded(wire, since)
        return b"%s %s" % (payload, wire.encode()), base

    def events(self, wire: str) -> bytes | None:
        return b"events %d" % self.tick if wire == V2 else None


async def test_fan_out_makes_a_blocks_frames_once_for_each_wire_and_last_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The members of one block share their frames when they speak the same wire and were
    sent the same snapshot last; each still gets exactly what `snapshot` would send it,
    a busy one keeps the view for later and a closing one is sent nothing."""
    stats = WireStats()
    pairs = [socket.socketpair() for _ in range(6)]
    for sock in (sock for pair in pairs for sock in pair):
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    outlets = [Outlet(ours, FrameCache(), stats=stats, slow_close_s=60, wire=wire)
               for (ours, _), wire in zip(pairs, [V2, V2, V2, V1, V2, V2], strict=True)]
    first, second, late, old, busy, closing = outlets
    peers = [Peer(theirs) for _, theirs in pairs]
    try:
        async with trio.open_nursery() as nursery:
            for outlet in outlets:
                nursery.start_soon(outlet.run)
            one = Counted(1)  # a View to fan_out: what it asks of one
            fan_out([(outlet, cast(View, one)) for outlet in (first, second, old)])
            assert Counter(one.made) == Counter([(V1, None), (V2, None)])
            busy.send(big(0), ws.BINARY)  # its reader reads nothing: behind from now on
            closing.close(1000, "bye")
            two = Counted(2)
            fan_out([(outlet, cast(View, two))
                     for outlet in (first, second, late, old, busy, closing)])
            assert Counter(two.made) == Counter([(V1, ("block", 1)), (V2, None),
                                                 (V2, ("block", 1))])
            v2_one = [(ws.BINARY, b"events 1"), (ws.BINARY, b"complete 1 v2")]
            delta = [(ws.BINARY, b"events 2"), (ws.BINARY, b"delta 2 v2")]
            assert await peers[0].frames(4) == v2_one + delta
            assert await peers[1].frames(4) == v2_one + delta
            assert await peers[2].frames(2) == [(ws.BINARY, b"events 2"),
                                                (ws.BINARY, b"complete 2 v2")]
            assert await peers[3].frames(2) == [(ws.TEXT, b"complete 1 v1"),
                                                (ws.TEXT, b"delta 2 v1")]
            assert stats.snapshots["z1"][0] == 3 + 4  # the busy one's is not sent yet
            assert (await peers[5].frames(1))[0][0] == ws.CLOSE
            peers[4].drain()  # the busy reader reads again: its view comes after the big one
            frames = [(ws.BINARY, big(0)), (ws.BINARY, b"events 2"),
                      (ws.BINARY, b"complete 2 v2")]
            with trio.fail_after(10):
                while parse(peers[4].data)[0] != frames:
                    await trio.lowlevel.wait_readable(peers[4].sock)
                    peers[4].drain()
            nursery.cancel_scope.cancel()
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
