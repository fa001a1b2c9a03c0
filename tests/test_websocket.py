"""Unit tests of server/ws/codec.py, the sans-IO RFC 6455 codec: the accept key, the HTTP
request head parser and the 101 handshake, server frame headers for each length encoding,
close frames, and FrameReader (unmasking, several frames per feed, frames split across
feeds, fragments, control frames, and each ProtocolViolation with its close code).

Rules: pure logic, no sockets, no trio, no services. Client frames are built by
`client_frame` of bench/rawws.py, masked as a browser masks them.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.rawws import client_frame
from server.ws import codec as ws

# Every test on the C wire module and on its pure-Python twin (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("wire_impl")

UPGRADE_HEAD = (
    b"GET /world?token=abc&zone=z1 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"X-Tag: one\r\n"
    b"x-tag: two"
)


UNLIMITED = 1e12  # frames a second: these tests are about framing, not the rate


def read(data: bytes, max_message_bytes: int = 1 << 16) -> list[ws.Message]:
    reader = ws.FrameReader(max_message_bytes=max_message_bytes, max_frames_per_s=UNLIMITED,
                            now=0.0)
    reader.feed(data)
    return reader.messages(0.0)


def violation(data: bytes, max_message_bytes: int = 1 << 16) -> int:
    """The close code of the ProtocolViolation that reading `data` raises."""
    with pytest.raises(ws.ProtocolViolation) as raised:
        read(data, max_message_bytes)
    assert raised.value.reason
    return raised.value.code


# --- handshake -----------------------------------------------------------------------------


def test_accept_key_matches_rfc_6455_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_parse_request_head_reads_method_target_and_lower_cased_headers() -> None:
    request = ws.parse_request_head(UPGRADE_HEAD)
    assert request is not None
    assert request.method == "GET"
    assert request.path == "/world"
    assert request.query("token") == "abc"
    assert request.query("zone") == "z1"
    assert request.query("missing") is None
    assert request.headers["host"] == "example.com"
    assert request.headers["sec-websocket-version"] == "13"
    assert request.headers["x-tag"] == "one, two"  # repeated headers joined
    assert all(name == name.lower() for name in request.headers)
    assert request.is_websocket_upgrade


@pytest.mark.parametrize("head", [
    UPGRADE_HEAD.replace(b"GET", b"POST"),
    UPGRADE_HEAD.replace(b"Upgrade: websocket", b"Upgrade: h2c"),
    UPGRADE_HEAD.replace(b"Connection: keep-alive, Upgrade", b"Connection: keep-alive"),
    b"GET /world HTTP/1.1\r\nHost: example.com",
])
def test_is_websocket_upgrade_false_without_get_upgrade_and_connection(head: bytes) -> None:
    request = ws.parse_request_head(head)
    assert request is not None
    assert not request.is_websocket_upgrade


@pytest.mark.parametrize("head", [
    b"",
    b"hello",
    b"GET /world",
    b"GET  /world HTTP/1.1",  # two spaces: four parts
    b"GET /world SPDY/3",
    b"GET /world HTTP/1.1\r\nHost example.com",  # a header line without a colon
])
def test_parse_request_head_rejects_garbage(head: bytes) -> None:
    assert ws.parse_request_head(head) is None


def test_handshake_response_for_a_valid_upgrade() -> None:
    request = ws.parse_request_head(UPGRADE_HEAD)
    assert request is not None
    response = ws.handshake_response(request)
    assert response is not None
    assert response.startswith(b"HTTP/1.1 101")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(("old", "new"), [
    (b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="),  # valid base64, but 5 bytes, not 16
    (b"dGhlIHNhbXBsZSBub25jZQ==", b"not base64!!"),
    (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"X-Other: 1"),
    (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"),
    (b"Sec-WebSocket-Version: 13", b"X-Other: 1"),
])
def test_handshake_response_refuses_bad_key_or_version(old: bytes, new: bytes) -> None:
    request = ws.parse_request_head(UPGRADE_HEAD.replace(old, new))
    assert request is not None
    assert ws.handshake_response(request) is None


# --- server frames -------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "header"), [
    (0, b"\x81\x00"),
    (125, b"\x81\x7d"),
    (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"),
    (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_frame_header_uses_7_16_or_64_bit_lengths(length: int, header: bytes) -> None:
    assert ws.frame_header(length) == header
    payload = b"x" * length
    assert ws.frame(payload) == header + payload


def test_frame_carries_the_opcode_with_fin_set() -> None:
    assert ws.frame(b"\x01\x02", ws.BINARY) == b"\x82\x02\x01\x02"
    assert ws.frame(b"", ws.PONG) == b"\x8a\x00"


def test_close_frame_carries_the_code_big_endian_then_the_reason() -> None:
    assert ws.close_frame(1000, "bye") == b"\x88\x05\x03\xe8bye"
    frame = ws.close_frame(4009, "replaced")
    assert frame[0] == 0x80 | ws.CLOSE
    assert frame[2:4] == (4009).to_bytes(2, "big")
    assert frame[4:] == b"replaced"
    assert len(ws.close_frame(1000, "r" * 500)) == 2 + 2 + 120  # fits a control frame


# --- FrameReader ---------------------------------------------------------------------------


def test_masked_text_frame_round_trips() -> None:
    assert read(client_frame(b'{"type":"move","dx":1}')) == [(ws.TEXT, b'{"type":"move","dx":1}')]
    assert read(client_frame(b"")) == [(ws.TEXT, b"")]
    big = bytes(range(256)) * 300  # 76800 bytes: a 64-bit length
    assert read(client_frame(big, ws.BINARY), max_message_bytes=len(big)) == [(ws.BINARY, big)]


def test_several_frames_in_one_feed() -> None:
    data = client_frame(b"one") + client_frame(b"two" * 50) + client_frame(b"\x00", ws.BINARY)
    assert read(data) == [(ws.TEXT, b"one"), (ws.TEXT, b"two" * 50), (ws.BINARY, b"\x00")]


def test_frames_split_across_feeds_byte_by_byte() -> None:
    data = client_frame(b"first") + client_frame(b"second" * 30)
    reader = ws.FrameReader(max_message_bytes=1024, max_frames_per_s=UNLIMITED, now=0.0)
    seen: list[tuple[int, ws.Message]] = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        seen.extend((i, message) for message in reader.messages(0.0))
    assert seen == [(len(client_frame(b"first")) - 1, (ws.TEXT, b"first")),
                    (len(data) - 1, (ws.TEXT, b"second" * 30))]


def test_fragmented_message_is_reassembled() -> None:
    reader = ws.FrameReader(max_message_bytes=1024, max_frames_per_s=UNLIMITED, now=0.0)
    reader.feed(client_frame(b"hello, ", fin=False))
    assert reader.messages(0.0) == []
    reader.feed(client_frame(b"wor", ws.CONTINUATION, fin=False))
    assert reader.messages(0.0) == []
    reader.feed(client_frame(b"ld", ws.CONTINUATION))
    assert reader.messages(0.0) == [(ws.TEXT, b"hello, world")]
    reader.feed(client_frame(b"next"))
    assert reader.messages(0.0) == [(ws.TEXT, b"next")]


def test_control_frames_are_returned_even_between_fragments() -> None:
    data = (client_frame(b"ab", fin=False) + client_frame(b"are you there", ws.PING)
            + client_frame(b"cd", ws.CONTINUATION)
            + client_frame(struct.pack("!H", 1000) + b"done", ws.CLOSE))
    assert read(data) == [(ws.PING, b"are you there"), (ws.TEXT, b"abcd"),
                          (ws.CLOSE, b"\x03\xe8done")]


def test_unmasked_client_frame_is_a_protocol_error() -> None:
    assert violation(client_frame(b"hi", masked=False)) == 1002


def test_frame_over_the_limit_is_refused_from_its_header_alone() -> None:
    assert violation(client_frame(b"x" * 11), max_message_bytes=10) == 4008
    header_only = client_frame(b"", length=1 << 20)[:-4]  # no mask key, no payload yet
    assert violation(header_only, max_message_bytes=1000) == 4008
    assert read(client_frame(b"x" * 10), max_message_bytes=10) == [(ws.TEXT, b"x" * 10)]


def test_fragments_summing_over_the_limit_are_refused() -> None:
    data = client_frame(b"x" * 6, fin=False) + client_frame(b"y" * 6, ws.CONTINUATION)
    assert violation(data, max_message_bytes=10) == 4008


def test_continuation_without_a_start_is_a_protocol_error() -> None:
    assert violation(client_frame(b"orphan", ws.CONTINUATION)) == 1002


def test_new_message_inside_a_fragmented_one_is_a_protocol_error() -> None:
    assert violation(client_frame(b"a", fin=False) + client_frame(b"b")) == 1002


@pytest.mark.parametrize("frame", [
    client_frame(b"p" * 126, ws.PING),
    client_frame(b"p", ws.PING, fin=False),
    client_frame(b"c" * 126, ws.CLOSE),
])
def test_bad_control_frames_are_protocol_errors(frame: bytes) -> None:
    assert violation(frame) == 1002


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_reserved_bits_are_protocol_errors(rsv: int) -> None:
    assert violation(client_frame(b"hi", rsv=rsv)) == 1002


def test_unknown_opcode_is_a_protocol_error() -> None:
    assert violation(client_frame(b"hi", 0x3)) == 1002


def test_after_goodbye_frames_are_passed_over_until_the_peers_close() -> None:
    close = client_frame(struct.pack("!H", 1000), ws.CLOSE)
    stream = client_frame(b'{"type":"move","dx":1,"dy":0,"seq":1}') * 50 + close
    close_at = len(stream) - len(close)
    reader = ws.FrameReader(max_message_bytes=4096, max_frames_per_s=UNLIMITED, now=0.0)
    seen = []
    for at in range(0, len(stream), 7):  # split anywhere, headers included
        reader.feed(stream[at:at + 7])
        seen.append(reader.goodbye_seen())
    # Known from the close frame's first two bytes on, and not a chunk before.
    assert seen == [at + 7 >= close_at + 2 for at in range(0, len(stream), 7)]


def test_after_goodbye_a_frame_of_any_size_streams_past_unkept() -> None:
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 10 << 20) + b"mask"
    # far under the frame: no 4008 now
    reader = ws.FrameReader(max_message_bytes=4096, max_frames_per_s=UNLIMITED, now=0.0)
    reader.feed(header)
    assert not reader.goodbye_seen()
    chunk = b"\x00" * 65536
    for _ in range((10 << 20) // len(chunk)):
        reader.feed(chunk)
        assert not reader.goodbye_seen()
        assert len(reader._buffer) == 0, "a passed-over frame is not kept"
    reader.feed(client_frame(struct.pack("!H", 1001), ws.CLOSE))
    assert reader.goodbye_seen()


def test_a_message_of_more_than_16_frames_is_refused() -> None:
    start = client_frame(b"x", fin=False)
    middle = client_frame(b"", ws.CONTINUATION, fin=False)
    end = client_frame(b"y", ws.CONTINUATION)
    assert read(start + middle * 14 + end) == [(ws.TEXT, b"xy")]  # 16 frames
    with pytest.raises(ws.ProtocolViolation) as raised:
        read(start + middle * 15 + end)
    assert (raised.value.code, raised.value.reason) == (4008, "too many fragments")


def test_every_frame_is_charged_to_the_frame_rate_control_frames_too() -> None:
    reader = ws.FrameReader(max_message_bytes=1024, max_frames_per_s=5, now=100.0)
    reader.feed(client_frame(b"", ws.PING) * 10)  # the burst: twice the rate
    assert len(reader.messages(100.0)) == 10
    reader.feed(client_frame(b"", ws.PONG))
    with pytest.raises(ws.ProtocolViolation) as raised:
        reader.messages(100.0)
    assert (raised.value.code, raised.value.reason) == (4008, "too many frames")
    later = ws.FrameReader(max_message_bytes=1024, max_frames_per_s=5, now=100.0)
    later.feed(client_frame(b"", ws.PING) * 10)
    later.messages(100.0)
    later.feed(client_frame(b"a", fin=False))
    assert later.messages(100.2) == []  # one frame back after 1/5 s, fragments count too


# --- properties: whatever bytes arrive, only the documented outcomes -------------------------

CODES = {1002, 1007, 4008}  # docs/protocol.md: what a frame reader closes with

frames = st.builds(
    lambda payload, opcode, fin, masked, rsv: client_frame(payload, opcode, fin=fin,
                                                           masked=masked, rsv=rsv),
    st.binary(max_size=200), st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB]),
    st.booleans(), st.booleans() | st.just(True), st.sampled_from([0, 0, 0, 0x40, 0x20]))


def _outcome(reader: ws.FrameReader, chunks: list[bytes]) -> list[ws.Message] | int:
    """The messages `chunks` make, fed one by one, or the close code they end with."""
    found: list[ws.Message] = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            found += reader.messages(0.0)
    except ws.ProtocolViolation as exc:
        assert exc.code in CODES and exc.reason, exc
        return exc.code
    return found


@given(st.lists(st.binary(max_size=300), max_size=20), st.booleans())
def test_any_bytes_are_messages_or_a_documented_close(chunks: list[bytes], deflate: bool
                                                      ) -> None:
    reader = ws.FrameReader(max_message_bytes=512, max_frames_per_s=UNLIMITED, now=0.0,
                            deflate=deflate)
    outcome = _outcome(reader, chunks)
    if isinstance(outcome, list):
        assert all(opcode in (ws.TEXT, ws.BINARY, ws.CLOSE, ws.PING, ws.PONG)
                   and len(payload) <= 512 for opcode, payload in outcome)


@given(st.lists(frames, max_size=30), st.integers(1, 64), st.booleans())
def test_any_frames_split_anywhere_read_as_in_one_piece(sequence: list[bytes], split: int,
                                                        deflate: bool) -> None:
    """However the bytes are cut, the reader says the same: framing has no state but
    the buffer, and a fragment sequence is judged the same in pieces."""
    data = b"".join(sequence)
    whole = _outcome(ws.FrameReader(max_message_bytes=512, max_frames_per_s=UNLIMITED,
                                    now=0.0, deflate=deflate), [data])
    pieces = _outcome(ws.FrameReader(max_message_bytes=512, max_frames_per_s=UNLIMITED,
                                     now=0.0, deflate=deflate),
                      [data[at:at + split] for at in range(0, len(data), split)])
    assert pieces == whole


@given(st.integers(0, 20_000))
def test_empty_continuations_are_refused_after_16_however_many_come(n: int) -> None:
    """Each continuation costs the same whatever came before it (no sum over the earlier
    fragments), and the 17th frame of a message ends it: at most 16 are ever kept."""
    reader = ws.FrameReader(max_message_bytes=4096, max_frames_per_s=UNLIMITED, now=0.0)
    outcome = _outcome(reader, [client_frame(b"{", fin=False)
                                + client_frame(b"", ws.CONTINUATION, fin=False) * n])
    assert outcome == ([] if n < 15 else 4008)
    assert len(reader._fragments) <= ws.MAX_FRAGMENTS


@given(st.binary(max_size=2000))
def test_any_request_head_parses_or_is_refused(head: bytes) -> None:
    request = ws.parse_request_head(head)
    if request is not None:
        assert ws.handshake_response(request) is None or request.headers
        ws.offers_deflate(request)
        assert isinstance(request.path, str)


@given(st.binary(max_size=600), st.integers(0, 2048))
def test_any_compressed_payload_inflates_within_its_limit_or_closes(data: bytes, limit: int
                                                                    ) -> None:
    try:
        assert len(ws.inflate(data, limit)) <= limit
    except ws.ProtocolViolation as exc:
        assert exc.code in (1007, 4008)
