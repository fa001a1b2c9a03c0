"""Unit tests of server/ws/messages.py, what a world client's messages mean: each
message type parsed into its typed value, every refusal with its code, the close,
ping and pong frames, the rate limit, seq ordering per character, and the join and
idle deadlines; and, as properties (Hypothesis), that whatever bytes or values arrive,
in whichever frame, the only outcomes are the documented ones, nested values included.

Rules: pure logic, no sockets, no trio, no services; time is a number passed in.
"""

from __future__ import annotations

import json
import uuid

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.api import LARGEST, Input, Setup
from rules.shooter import Shooter
from server.ws import codec
from server.ws.codec import TokenBucket
from server.ws.messages import (
    JSON,
    MAX_PING_T,
    MSGPACK,
    CloseFrame,
    Conversation,
    Join,
    Ping,
    PingFrame,
    Received,
    Refusal,
    Renew,
    Resync,
    Travel,
    Violation,
    Wire,
    error,
)

CHARACTER = str(uuid.uuid4())


class moved:
    """Equal to the Input of a move by (dx, dy) numbered `seq`."""

    def __init__(self, dx: float, dy: float, seq: int) -> None:
        self.values, self.seq = (dx, dy), seq

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Input) and other.kind == "move"
                and (other.values, other.seq) == (self.values, self.seq))


def conversation(*, now: float = 0.0, rate: float = 30.0) -> Conversation:
    return Conversation(max_messages_per_s=rate, join_timeout_s=10.0, idle_timeout_s=60.0,
                        now=now)


def text(body: object) -> tuple[int, bytes]:
    return codec.TEXT, orjson.dumps(body)


def joined(now: float = 0.0) -> Conversation:
    talk = conversation(now=now)
    talk.welcomed(CHARACTER, now)
    return talk


def test_each_request_becomes_its_typed_value() -> None:
    talk = joined()
    character_id = uuid.uuid4()
    assert talk.receive(*text({"type": "join", "character_id": str(character_id)}), 0) == \
        Join(character_id)
    assert talk.receive(*text({"type": "travel", "zone": "z2"}), 0) == Travel("z2")
    assert talk.receive(*text({"type": "move", "dx": 1, "dy": -0.5, "seq": 3}), 0) == \
        moved(1.0, -0.5, 3)
    assert talk.receive(*text({"type": "ping", "t": 12.5}), 0) == Ping(12.5)
    assert talk.receive(*text({"type": "ping", "t": "x" * MAX_PING_T}), 0) == \
        Ping("x" * MAX_PING_T)
    assert talk.receive(*text({"type": "ping"}), 0) == Ping(None)
    assert talk.receive(*text({"type": "resync"}), 0) == Resync()
    assert talk.receive(*text({"type": "renew", "token": "a.b.c"}), 0) == Renew("a.b.c")
    for token in (None, 7, "", "x" * 2049):
        refused = talk.receive(*text({"type": "renew", "token": token}), 0)
        assert isinstance(refused, Refusal) and refused.code == "validation_failed"


@pytest.mark.parametrize(("payload", "code"), [
    (b"{not json", "bad_json"),
    (b"[1, 2]", "bad_json"),
    (b'"a string"', "bad_json"),
    (b'{"type": "move", "dx": NaN, "dy": 0, "seq": 5}', "validation_failed"),
    (b'{"type": "move", "dx": 1e999, "dy": 0, "seq": 5}', "validation_failed"),
    (b'{"type": "dance"}', "validation_failed"),
    (b'{"no": "type"}', "validation_failed"),
    (b'{"type": "join"}', "validation_failed"),
    (b'{"type": "join", "character_id": "not-a-uuid"}', "validation_failed"),
    (b'{"type": "join", "character_id": 42}', "validation_failed"),
    (b'{"type": "travel"}', "validation_failed"),
    (b'{"type": "travel", "zone": ""}', "validation_failed"),
    (b'{"type": "travel", "zone": 7}', "validation_failed"),
    (b'{"type": "move", "dx": "1", "dy": 0, "seq": 5}', "validation_failed"),
    (b'{"type": "move", "dx": true, "dy": 0, "seq": 5}', "validation_failed"),
    (b'{"type": "move", "dx": 1, "dy": null, "seq": 5}', "validation_failed"),
    (b'{"type": "move", "dx": 1, "dy": 0}', "validation_failed"),
    (b'{"type": "move", "dx": 1, "dy": 0, "seq": 1.5}', "validation_failed"),
    (b'{"type": "move", "dx": 1, "dy": 0, "seq": -1}', "validation_failed"),
    (b'{"type": "move", "dx": 1, "dy": 0, "seq": true}', "validation_failed"),
    (b'{"type": "move", "dx": 1, "dy": 0, "seq": 9223372036854775808}', "validation_failed"),
    (b'{"type": "move", "dx": 1e400, "dy": 0, "seq": 5}', "validation_failed"),
    (b'{"type": "ping", "t": {"a": [1]}}', "validation_failed"),
    (b'{"type": "ping", "t": true}', "validation_failed"),
    (b'{"type": "ping", "t": "%s"}' % (b"x" * (MAX_PING_T + 1)), "validation_failed"),
    (b'{"type": "ping", "t": 123456789012345678901234567890}', "validation_failed"),
    # What once ended the process: an echoed value nested past orjson's limit of 255.
    (b'{"type": "ping", "t": %s}' % (b"[" * 300 + b"]" * 300), "validation_failed"),
    # ... and a message nested past the stdlib's recursion limit, with a NaN in it.
    (b'{"a": NaN, "t": %s}' % (b"[" * 2000 + b"]" * 2000), "bad_json"),
    (b"[" * 2000 + b"]" * 2000, "bad_json"),
])
def test_bad_messages_are_refusals(payload: bytes, code: str) -> None:
    refusal = joined().receive(codec.TEXT, payload, 0)
    assert isinstance(refusal, Refusal) and refusal.code == code, refusal
    assert refusal.message


def test_text_that_is_not_utf8_closes_with_1007_on_either_wire() -> None:
    """RFC 6455 8.1; text that is UTF-8 but not JSON stays a bad_json refusal."""
    bad = b'{"type": "\xff\xfe"}'
    assert joined().receive(codec.TEXT, bad, 0) == Violation(1007, "text must be UTF-8")
    v2 = Conversation(max_messages_per_s=30.0, join_timeout_s=10.0, idle_timeout_s=60.0,
                      now=0.0, wire=MSGPACK)
    assert v2.receive(codec.TEXT, bad, 0) == Violation(1007, "text must be UTF-8")
    assert v2.receive(codec.TEXT, b"ok", 0) == \
        Refusal("validation_failed", "send binary frames of MessagePack")
    refusal = joined().receive(codec.TEXT, "{é".encode(), 0)
    assert isinstance(refusal, Refusal) and refusal.code == "bad_json"


V2 = Conversation(max_messages_per_s=1e9, join_timeout_s=10.0, idle_timeout_s=60.0, now=0.0,
                  wire=MSGPACK)


@pytest.mark.parametrize(("payload", "code"), [
    (b"\xc1", "bad_json"),  # a byte MessagePack never uses
    (b"\x92\x01\x02", "bad_json"),  # an array, not a map
    (b"\x81\xa1t" + b"\x91" * 1500 + b"\x90", "validation_failed"),  # once a RecursionError
    (b"\x81\xa1t\x80", "validation_failed"),  # a map in a map
    (b"\x81\x01\x02", "validation_failed"),  # a key that is no string
    (b"\x81\xa1t\xcf" + b"\xff" * 8, "validation_failed"),  # past 64-bit signed
    (b"\x82\xa4type\xa4ping\xa1t\xc4\x01x", "validation_failed"),  # bytes are no string
])
def test_bad_v2_messages_are_refusals(payload: bytes, code: str) -> None:
    refusal = V2.receive(codec.BINARY, payload, 0)
    assert isinstance(refusal, Refusal) and refusal.code == code, refusal


def test_binary_frames_are_refused() -> None:
    assert joined().receive(codec.BINARY, b'{"type": "ping"}', 0) == \
        Refusal("validation_failed", "send text frames of JSON")


def test_a_move_before_a_join_is_not_joined() -> None:
    talk = conversation()
    refusal = talk.receive(*text({"type": "move", "dx": 1, "dy": 0, "seq": 1}), 0)
    assert isinstance(refusal, Refusal) and refusal.code == "not_joined"


def test_seq_must_increase_and_goes_on_for_the_same_character() -> None:
    talk = joined()
    assert talk.receive(*text({"type": "move", "dx": 1, "dy": 0, "seq": 4}), 0) == \
        moved(1.0, 0.0, 4)
    for seq in (4, 3):
        refusal = talk.receive(*text({"type": "move", "dx": 1, "dy": 0, "seq": seq}), 0)
        assert isinstance(refusal, Refusal) and "last was 4" in refusal.message
    talk.welcomed(CHARACTER, 1)  # the same character again (a re-join, a travel)
    assert isinstance(talk.receive(*text({"type": "move", "dx": 1, "dy": 0, "seq": 4}), 1),
                      Refusal)
    talk.welcomed(str(uuid.uuid4()), 2)  # another character: its own numbering
    assert talk.receive(*text({"type": "move", "dx": 1, "dy": 0, "seq": 0}), 2) == \
        moved(1.0, 0.0, 0)
    talk.left()
    assert talk.receive(*text({"type": "move", "dx": 1, "dy": 0, "seq": 9}), 2) == \
        Refusal("not_joined", "join a character before moving")


def test_frames_that_are_not_messages() -> None:
    talk = conversation()
    assert talk.receive(codec.PING, b"hi", 0) == PingFrame(b"hi")
    assert talk.receive(codec.PONG, b"", 0) is None
    assert talk.receive(codec.CLOSE, (4321).to_bytes(2, "big") + b"bye", 0) == CloseFrame(4321)
    assert talk.receive(codec.CLOSE, b"", 0) == CloseFrame(1000)
    for unsendable in (1005, 1006, 1015, 999, 5000):  # no close frame may carry these
        assert talk.receive(codec.CLOSE, unsendable.to_bytes(2, "big"), 0) == CloseFrame(1000)


def test_the_rate_limit_closes_with_4008_and_control_frames_do_not_count() -> None:
    talk = conversation(rate=5)
    ping = text({"type": "ping"})
    assert all(isinstance(talk.receive(*ping, 0), Ping) for _ in range(10))  # the burst
    for _ in range(100):
        assert talk.receive(codec.PING, b"", 0) == PingFrame(b"")
    assert talk.receive(*ping, 0) == Violation(4008, "too many messages")
    assert isinstance(talk.receive(*ping, 0.2), Ping)  # a token back after 1/5 s


def test_the_join_deadline_then_the_idle_deadline() -> None:
    talk = conversation(now=100.0)
    assert talk.expired(109.9) is None
    assert talk.expired(110.0) == Violation(4008, "no join in time")
    talk.receive(*text({"type": "ping"}), 105.0)  # a message before a join buys no time
    assert talk.deadline == 110.0
    talk.welcomed(CHARACTER, 108.0)
    assert talk.deadline == 168.0
    talk.receive(*text({"type": "ping"}), 150.0)  # once joined, any message does
    assert talk.expired(209.0) is None
    assert talk.expired(210.0) == Violation(4008, "idle for too long")
    talk.receive(codec.PING, b"", 200.0)  # a WebSocket ping does not
    assert talk.deadline == 210.0


def test_token_bucket_allows_bursts_of_twice_the_rate_then_refills() -> None:
    bucket = TokenBucket(rate=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(11)] == [True] * 10 + [False]
    assert not bucket.take(100.1)  # half a token
    assert bucket.take(100.2)  # one token back after 1 / rate seconds
    assert not bucket.take(100.2)
    assert [bucket.take(160.0) for _ in range(11)] == [True] * 10 + [False]  # capped at 2x


# --- properties: whatever arrives, only the documented outcomes ----------------------------

OUTCOMES = (Join, Travel, Input, Ping, Resync, Renew, Refusal, PingFrame, CloseFrame,
            Violation, type(None))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=80))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)
SHOOTER = {spec.kind: spec for spec in Shooter(Setup()).inputs}  # move and fire
huge = st.sampled_from([1e300, -1e300, 1.0000001e300, 1.5e308, -1.7e308, 5e-324, 0.0])
numbers = st.one_of(st.floats(), st.integers(), huge, st.booleans(), st.text(max_size=4))
messages = st.one_of(
    st.dictionaries(st.sampled_from(["type", "dx", "dy", "seq", "t", "zone", "character_id",
                                     "x", "weapon", "ax", "ay", "tick"]), values, max_size=6),
    st.fixed_dictionaries({"type": st.sampled_from(["move", "join", "ping", "travel",
                                                    "resync", "fire", "renew"])},
                          optional={"dx": values, "dy": values, "seq": values, "t": values,
                                    "token": values,
                                    "zone": values, "character_id": values, "weapon": values,
                                    "ax": values, "ay": values, "tick": values}),
    # Fire and moves near their limits: known weapons, numbers of every size, ticks.
    st.fixed_dictionaries({"type": st.sampled_from(["fire", "move"]),
                           "seq": st.integers(-1, 2**64), "weapon": st.sampled_from(
                               ["pistol", "rifle", "bazooka", "", "p" * 33]),
                           "ax": numbers, "ay": numbers, "dx": numbers, "dy": numbers,
                           "tick": st.one_of(st.integers(), st.floats())}),
    values)


def _judged(wire: Wire, opcode: int, payload: bytes) -> Received:
    talk = Conversation(max_messages_per_s=1e9, join_timeout_s=10.0, idle_timeout_s=60.0,
                        now=0.0, wire=wire, inputs=SHOOTER)
    talk.welcomed(CHARACTER, 0)
    received = talk.receive(opcode, payload, 0)
    assert isinstance(received, OUTCOMES), received
    if isinstance(received, Input):  # what the game is handed is within the spec's bounds
        assert received.kind in SHOOTER
        for value in received.values:
            assert not isinstance(value, float) or -LARGEST <= value <= LARGEST, received.values
    if isinstance(received, Ping):  # its answer must encode, on either wire
        assert wire.encode({"type": "pong", "t": received.t})
    return received


@given(st.binary(max_size=600), st.sampled_from(list(range(16))))
def test_any_bytes_in_any_frame_give_a_documented_outcome(payload: bytes, opcode: int) -> None:
    for wire in (JSON, MSGPACK):
        _judged(wire, opcode, payload)


@given(messages)
def test_any_json_value_gives_a_documented_outcome(message: object) -> None:
    try:
        payload = json.dumps(message).encode()  # NaN and Infinity included
    except (ValueError, RecursionError):
        return
    _judged(JSON, codec.TEXT, payload)


@given(messages)
def test_any_msgpack_value_gives_a_documented_outcome(message: object) -> None:
    try:
        payload = msgspec.msgpack.encode(message)
    except (OverflowError, TypeError):  # integers past 64 bits have no MessagePack
        return
    _judged(MSGPACK, codec.BINARY, payload)


@given(st.integers(1, 5000), st.sampled_from([b"[", b"{\"a\":", b"\x91", b"\x81\xa1a"]))
def test_any_depth_of_nesting_is_refused_at_its_first_level(depth: int, opener: bytes) -> None:
    wire, opcode = (MSGPACK, codec.BINARY) if opener[0] >= 0x80 else (JSON, codec.TEXT)
    closer = {b"[": b"]", b'{"a":': b"}"}.get(opener, b"")
    inner = b"0" if wire is JSON else b"\x00"
    nested = opener * depth + inner + closer * depth
    body = b'{"type":"ping","t":%s}' % nested if wire is JSON else \
        b"\x82\xa4type\xa4ping\xa1t" + nested
    received = _judged(wire, opcode, body)
    assert isinstance(received, Refusal) and received.code == "validation_failed", received


@given(st.text(max_size=40), st.text(max_size=200), st.none() | st.integers(0, 2**63 - 1))
def test_an_error_reads_back_on_either_wire(code: str, message: str, seq: int | None) -> None:
    """The `error` of a refusal names the input's seq (docs/protocol.md); others have none."""
    for wire in (JSON, MSGPACK):
        body = msgspec.json.decode(error(wire, code, message, seq)) if wire is JSON else \
            msgspec.msgpack.decode(error(wire, code, message, seq))
        assert body == {"type": "error", "code": code, "message": message,
                        **({} if seq is None else {"seq": seq})}
