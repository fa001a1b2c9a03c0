"""The per-socket loops' bytes (server/ws/wire.py): the C module and its pure-Python twin
keep one contract, on real sockets (socketpairs and an epoll, as the hub has).

Decoding moves is the C module's alone, and it may only ever be a shortcut: every move
it decodes is the move the codec and the Conversation make of the same frame, and
whatever it does not decode comes back as the very bytes that were sent, from a frame's
start. Hypothesis writes the frames (moves in every encoding MessagePack and JSON allow,
other messages, control frames, fragments, compressed and unmasked frames, garbage).

Rules: real sockets; no mocks."""

from __future__ import annotations

import math
import os
import select
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules.api import LARGEST, MOVE, Input, InputSpec
from server.ws import codec, wire
from server.ws.messages import JSON, MSGPACK, Conversation, Wire
from server.ws.wire import MODE_BYTES, MODE_V1, MODE_V2, PYTHON

NATIVE = wire.NATIVE
native_only = pytest.mark.skipif(NATIVE is None, reason="the C wire module was not built "
                                 "(installed with OUTPOST_COMPILE=0?)")
IMPLS = [pytest.param(PYTHON, id="python"),
         pytest.param(NATIVE, id="native", marks=native_only)]


@contextmanager
def watched(pairs: int = 1) -> Iterator[tuple[select.epoll, list[tuple[socket.socket,
                                                                       socket.socket]]]]:
    """Socket pairs whose server ends an epoll watches, as the hub's does."""
    epoll = select.epoll()
    made = [socket.socketpair() for _ in range(pairs)]
    for server, _ in made:
        server.setblocking(False)
        epoll.register(server.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    try:
        yield epoll, made
    finally:
        epoll.close()
        for server, client in made:
            server.close()
            client.close()


def client_frame(payload: bytes, opcode: int, *, fin: bool = True, rsv: int = 0,
                 mask: bytes = b"\x1f\x8b\x00\xa5", masked: bool = True) -> bytes:
    """A client's frame: masked (unless told), final (unless told)."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    bit = 0x80 if masked else 0
    head = bytes([first, bit | n]) if n < 126 else (
        struct.pack("!BBH", first, bit | 126, n) if n < 1 << 16
        else struct.pack("!BBQ", first, bit | 127, n))
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# --- send_each ----------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_send_each_writes_every_frame_and_reports_only_what_it_could_not(
        impl: wire.Wire) -> None:
    with watched(3) as (_, pairs):
        small = pairs[2][0]
        small.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        frames = [b"a" * 10, b"b" * 300, b"c" * 1_000_000]
        closed = socket.socket()
        closed.close()
        fds = [pairs[0][0].fileno(), pairs[1][0].fileno(), small.fileno(), closed.fileno()]
        total, short = impl.send_each(fds, [*frames, b"lost"])
        assert [i for i, _ in short] == [2, 3]
        taken = short[0][1]
        assert 0 < taken < len(frames[2])
        assert short[1] == (3, -1)  # a closed socket (fd -1) is broken, never written
        assert total == 10 + 300 + taken
        assert pairs[0][1].recv(100) == frames[0]
        assert pairs[1][1].recv(1000) == frames[1]
        got = b""
        while len(got) < taken:
            got += pairs[2][1].recv(1 << 20)
        assert got == frames[2][:taken]


@pytest.mark.parametrize("impl", IMPLS)
def test_send_each_to_a_socket_whose_peer_is_gone_says_broken(impl: wire.Wire) -> None:
    with watched() as (_, [(server, client)]):
        client.close()
        _, short = impl.send_each([server.fileno()], [b"x"])
        while short == []:  # the first write after the peer's close may still be taken
            _, short = impl.send_each([server.fileno()], [b"x"])
        assert short == [(0, -1)]


@pytest.mark.parametrize("impl", IMPLS)
def test_send_each_refuses_what_is_not_its_contract(impl: wire.Wire) -> None:
    with pytest.raises((ValueError, TypeError)):
        impl.send_each([1, 2], [b"x"])


# --- read_ready ---------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_read_ready_reads_the_ready_sockets_and_tells_eof(impl: wire.Wire) -> None:
    with watched(3) as (epoll, pairs):
        modes = bytearray(65536)
        assert impl.read_ready(epoll, modes, LARGEST) == []
        pairs[0][1].sendall(b"hello")
        pairs[2][1].close()
        found = {fd: (moves, data) for fd, moves, data in impl.read_ready(epoll, modes, LARGEST)}
        assert found == {pairs[0][0].fileno(): (None, b"hello"),
                         pairs[2][0].fileno(): (None, None)}


@pytest.mark.parametrize("impl", IMPLS)
def test_read_ready_takes_at_most_recv_bytes_a_socket_and_the_rest_next_time(
        impl: wire.Wire) -> None:
    with watched() as (epoll, [(_, client)]):
        sent = os.urandom(wire.RECV_BYTES + 1000)
        client.sendall(sent)
        got = b""
        while len(got) < len(sent):
            for _, _, data in impl.read_ready(epoll, bytes(65536), LARGEST):
                assert data is not None and len(data) <= wire.RECV_BYTES
                got += data
        assert got == sent


def move_v2(seq: int, dx: float, dy: float) -> bytes:
    return msgspec.msgpack.encode({"type": "move", "seq": seq, "dx": dx, "dy": dy})


@native_only
@pytest.mark.parametrize(("mode", "encode", "opcode"), [
    (MODE_V2, move_v2, codec.BINARY),
    (MODE_V1, lambda s, x, y: orjson.dumps({"type": "move", "seq": s, "dx": x, "dy": y}),
     codec.TEXT),
    (MODE_V1, lambda s, x, y: f'{{ "dx" : {x!r}, "dy":{y!r},\n"seq": {s}, "type":"move"}}'
     .encode(), codec.TEXT),  # what JSON.stringify or a hand may write
])
def test_plain_moves_come_decoded_and_the_rest_as_sent(mode: int, encode: object,
                                                       opcode: int) -> None:
    assert callable(encode)
    assert NATIVE is not None
    moves = [(1, 0.5, -0.25), (2, 3.0, 4.0), (3, -1e-300, 0.0)]
    frames = b"".join(client_frame(encode(*m), opcode) for m in moves)
    ping = client_frame(b"hi", codec.PING)
    later = client_frame(encode(4, 1.0, 1.0), opcode)
    with watched() as (epoll, [(server, client)]):
        modes = bytearray(65536)
        modes[server.fileno()] = mode
        client.sendall(frames + ping + later)
        [(fd, decoded, rest)] = NATIVE.read_ready(epoll, modes, LARGEST)
        assert fd == server.fileno()
        assert decoded == moves
        assert rest == ping + later  # from the first frame that is not a move, as sent
        modes[server.fileno()] = MODE_BYTES
        client.sendall(frames)
        assert NATIVE.read_ready(epoll, modes, LARGEST) == [(fd, None, frames)]


# --- the decoder is a shortcut, never a judge: Hypothesis ---------------------------------

plain_numbers = st.one_of(st.floats(min_value=-1e6, max_value=1e6), st.integers(-999, 999),
                          st.floats(width=32, min_value=-1e6, max_value=1e6))
odd_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(min_value=-(2**64), max_value=2**64),
                        st.booleans(), st.none(), st.text(max_size=3))
numbers = st.one_of(plain_numbers, plain_numbers, plain_numbers, odd_numbers)
seqs = st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1), odd_numbers)
keys = st.sampled_from(["type", "seq", "dx", "dy", "extra", "Type", "d\u00e9"])


@st.composite
def move_like(draw: st.DrawFn) -> dict[str, object]:
    """Moves and near-moves: keys left out, added, values of every type."""
    body: dict[str, object] = {"type": draw(st.sampled_from(["move", "move", "moves", "ping"])),
                               "seq": draw(seqs), "dx": draw(numbers), "dy": draw(numbers)}
    for key in draw(st.lists(keys, max_size=2)) if draw(st.integers(0, 3)) == 0 else ():
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(numbers)
    return dict(draw(st.permutations(list(body.items()))))


def encodings(body: dict[str, object], wire_: Wire) -> st.SearchStrategy[bytes]:
    """The ways a client may encode `body`: the usual, and odd ones."""
    if wire_ is MSGPACK:
        usual = msgspec.msgpack.encode(body) if _packable(body) else b"\x80"
        return st.sampled_from([usual] * 4 + [usual[:-1], usual + b"\x00", _str8_keys(usual)])
    try:
        usual = orjson.dumps(body)
    except orjson.JSONEncodeError:  # an integer past 64 bits
        usual = str(body).encode()
    spaced = usual.replace(b":", b" : ").replace(b",", b" ,\n")
    return st.sampled_from([usual] * 3 + [spaced, usual + b" ", b" " + usual, usual + b"x",
                                          usual.replace(b"move", b"mov\\u0065")])


def _packable(body: dict[str, object]) -> bool:
    return all(not isinstance(v, int) or -(2**63) <= v < 2**64 for v in body.values())


def _str8_keys(packed: bytes) -> bytes:
    """The same map with "type" as a str8 (0xd9): valid MessagePack the C side leaves alone."""
    return packed.replace(b"\xa4type", b"\xd9\x04type", 1)


@st.composite
def frames(draw: st.DrawFn, wire_: Wire) -> tuple[bytes, bytes, int]:
    """(frame, payload, opcode): mostly the wire's data frames, some of anything else."""
    kind = draw(st.sampled_from(["plain"] * 6 + ["move"] * 3 + ["other", "control", "odd"]))
    mask = draw(st.binary(min_size=4, max_size=4))
    if kind == "plain":  # what clients send: a run of these is what the C side takes
        payload = wire_.encode({"type": "move", "seq": draw(st.integers(0, 2**63 - 1)),
                                "dx": draw(plain_numbers), "dy": draw(plain_numbers)})
        return client_frame(payload, wire_.opcode, mask=mask), payload, wire_.opcode
    if kind == "move":
        payload = draw(encodings(draw(move_like()), wire_))
        return client_frame(payload, wire_.opcode, mask=mask), payload, wire_.opcode
    if kind == "other":
        payload = wire_.encode({"type": "ping", "t": draw(st.integers(0, 9))})
        return client_frame(payload, wire_.opcode, mask=mask), payload, wire_.opcode
    if kind == "control":
        opcode = draw(st.sampled_from([codec.PING, codec.PONG]))
        payload = draw(st.binary(max_size=8))
        return client_frame(payload, opcode, mask=mask), payload, opcode
    payload = move_v2(1, 1.0, 1.0) if wire_ is MSGPACK else b'{"type":"move","seq":1,"dx":1,"dy":1}'
    frame = draw(st.sampled_from([
        client_frame(payload, wire_.opcode, fin=False, mask=mask),
        client_frame(payload, wire_.opcode, rsv=codec.RSV1, mask=mask),
        client_frame(payload, wire_.opcode, masked=False),
        client_frame(payload, codec.TEXT if wire_ is MSGPACK else codec.BINARY, mask=mask),
        client_frame(payload * 4, wire_.opcode, mask=mask),  # past 125 bytes
    ]))
    return frame, payload, wire_.opcode


def judged(conversation: Conversation, opcode: int, payload: bytes) -> object:
    return conversation.receive(opcode, payload, 0.0)


@native_only
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_what_the_c_side_decodes_is_what_python_makes_of_it(data: st.DataObject) -> None:
    """Send any frames in one write; every move the C side decodes is, frame for frame,
    the Input the Conversation makes of the same payload, and the rest is the bytes sent
    from the first frame it left alone."""
    assert NATIVE is not None
    wire_ = data.draw(st.sampled_from([MSGPACK, JSON]))
    sent = data.draw(st.lists(frames(wire_), min_size=1, max_size=12))
    stream = b"".join(f for f, _, _ in sent)
    cut = data.draw(st.integers(min_value=1, max_value=len(stream)))  # a read may end anywhere
    with watched() as (epoll, [(server, client)]):
        modes = bytearray(65536)
        modes[server.fileno()] = MODE_V2 if wire_ is MSGPACK else MODE_V1
        client.sendall(stream[:cut])
        [(_, decoded, rest)] = NATIVE.read_ready(epoll, modes, LARGEST)
    decoded = decoded or []
    assert rest is not None
    taken = b"".join(f for f, _, _ in sent[:len(decoded)])
    assert taken + rest == stream[:cut]
    for (seq, dx, dy), (_, payload, opcode) in zip(decoded, sent, strict=False):
        conversation = Conversation(max_messages_per_s=1000, join_timeout_s=1,
                                    idle_timeout_s=1, now=0.0, wire=wire_)
        conversation.welcomed("c", 0.0)
        expected = judged(conversation, opcode, payload)
        assert isinstance(expected, Input), expected
        assert (expected.seq, *expected.values) == (seq, dx, dy)
        signs = [math.copysign(1, v) for v in expected.values if isinstance(v, float)]
        assert signs == [math.copysign(1, dx), math.copysign(1, dy)]  # -0.0 stays -0.0


@native_only
@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**63 - 1),
       st.floats(min_value=-LARGEST, max_value=LARGEST),
       st.floats(min_value=-LARGEST, max_value=LARGEST), st.sampled_from([MSGPACK, JSON]))
def test_a_move_as_clients_encode_it_is_always_decoded(seq: int, dx: float, dy: float,
                                                       wire_: Wire) -> None:
    """The shortcut is taken for the moves clients send, not only allowed."""
    assert NATIVE is not None
    payload = wire_.encode({"type": "move", "seq": seq, "dx": dx, "dy": dy})
    with watched() as (epoll, [(server, client)]):
        modes = bytearray(65536)
        modes[server.fileno()] = MODE_V2 if wire_ is MSGPACK else MODE_V1
        client.sendall(client_frame(payload, wire_.opcode))
        assert NATIVE.read_ready(epoll, modes, LARGEST) == [
            (server.fileno(), [(seq, dx, dy)], b"")]


def _plain(received: object) -> object:
    """An Input as comparable values (Inputs compare by identity); anything else as is."""
    if isinstance(received, Input):
        return (received.kind, received.seq, received.values)
    return received


@pytest.mark.parametrize("game", [{"move": MOVE}, {"fire": MOVE}], ids=["walk", "no-moves"])
def test_a_decoded_move_is_judged_as_the_same_message(game: dict[str, InputSpec]) -> None:
    """Conversation.move (what the hub hands a session) and receive (a message) agree:
    not joined, the seq's order, the rate, a game without moves."""
    a, b = (Conversation(max_messages_per_s=2, join_timeout_s=1, idle_timeout_s=1, now=0.0,
                         wire=MSGPACK, inputs=game) for _ in range(2))
    for step, seq in enumerate([1, 2, 2, 0, 7, 8, 9, 10]):
        if step == 1:
            a.welcomed("c", 0.0)
            b.welcomed("c", 0.0)
        assert _plain(a.move(seq, 1.0, -1.0, 0.0)) == _plain(
            b.receive(codec.BINARY, move_v2(seq, 1.0, -1.0), 0.0))
    assert a.deadline == b.deadline and a.last_seq == b.last_seq
