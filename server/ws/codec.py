"""A sans-IO WebSocket server codec (RFC 6455), just what the world's fast path needs.

Server frames are unmasked, so a frame is a few header bytes in front of the
payload: `frame()` builds it once and the same bytes go to every client. Client
frames are masked and small (inputs); `FrameReader` parses them from a byte
buffer, unmasks with one big-integer XOR, reassembles fragments, and enforces its
limits (docs/protocol.md, "Outpost, messages"): a message's size, fragments included;
the fragments of one message; and frames a second, every frame counted (fragments,
pings, pongs and closes too), so that whatever a client sends costs time in proportion
to its bytes and is cut off early. The subprotocol is the caller's choice. One
extension, permessage-deflate (RFC 7692), without context takeover either way: every
compressed message stands alone, so one compressed snapshot serves every client that
gets it, and a client's messages are inflated one by one (never past the size limit).
Nothing here imports trio.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
_CONTROL = (CLOSE, PING, PONG)
_OPCODES = (TEXT, BINARY, CONTINUATION, *_CONTROL)
MAX_FRAGMENTS = 16  # frames of one message: a 4 KB message needs no more (browsers send one)


# The refusals of requests to the world's path that are not a WebSocket handshake the
# fast path can take: the edge and the HTTP app both answer them.
NOT_AN_UPGRADE = "this endpoint only speaks WebSocket"
UPGRADE_FIRST = ("open the WebSocket as the first request of a connection, "
                 "not on a kept-alive HTTP one")


DEFLATE = "permessage-deflate"
DEFLATE_ACCEPTED = f"{DEFLATE}; server_no_context_takeover; client_no_context_takeover"
_DEFLATE_PARAMETERS = {"server_no_context_takeover", "client_no_context_takeover",
                       "server_max_window_bits", "client_max_window_bits"}
_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 7.2.1: left off each compressed message
RSV1 = 0x40  # a compressed message's first frame


class ProtocolViolation(Exception):
    """The peer broke RFC 6455; close with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """The HTTP request head of a connection, parsed just enough to route it."""

    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None

    @property
    def is_websocket_upgrade(self) -> bool:
        return (self.method == "GET"
                and self.headers.get("upgrade", "").lower() == "websocket"
                and "upgrade" in self.headers.get("connection", "").lower())


def parse_request_head(head: bytes) -> Request | None:
    """`head` up to (not including) the blank line; None if it is not HTTP/1.1-shaped."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Request(method, target, headers)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def offers_deflate(request: Request) -> bool:
    """Whether the request offers permessage-deflate as this server takes it: any offer
    whose parameters are known and that lets the server use the full window (our
    compressed snapshots are shared, so they are all made the same way)."""
    for offer in request.headers.get("sec-websocket-extensions", "").split(","):
        name, *parameters = (part.strip() for part in offer.split(";"))
        if name != DEFLATE:
            continue
        values = dict(p.partition("=")[::2] for p in parameters)
        if set(values) <= _DEFLATE_PARAMETERS and \
                values.get("server_max_window_bits", "15").strip('"') == "15":
            return True
    return False


def handshake_response(request: Request, subprotocol: str | None = None,
                       deflate: bool = False) -> bytes | None:
    """The 101 response for a valid upgrade request (naming `subprotocol` if one was
    chosen from those it offered, and permessage-deflate if `deflate`), or None if it
    is not one."""
    key = request.headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except ValueError:
        return None
    if request.headers.get("sec-websocket-version") != "13":
        return None
    chosen = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    if deflate:
        chosen += f"Sec-WebSocket-Extensions: {DEFLATE_ACCEPTED}\r\n"
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{chosen}\r\n").encode()


def http_response(status: int, reason: str, body: bytes,
                  content_type: str = "application/json", *,
                  retry_after_s: int | None = None) -> bytes:
    """A complete HTTP/1.1 response that closes the connection (a refused upgrade)."""
    retry = f"Retry-After: {retry_after_s}\r\n" if retry_after_s is not None else ""
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{retry}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def frame_header(length: int, opcode: int = TEXT, rsv: int = 0) -> bytes:
    """The header of one unmasked, final frame of `length` payload bytes."""
    first = 0x80 | rsv | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    return frame_header(len(payload), opcode) + payload


def deflated_frame(payload: bytes, opcode: int) -> bytes:
    """One message compressed on its own (permessage-deflate, no context takeover)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-len(_DEFLATE_TAIL)]
    return frame_header(len(data), opcode, RSV1) + data


def inflate(data: bytes, limit: int) -> bytes:
    """A compressed message's payload, at most `limit` bytes (ProtocolViolation past it:
    a small frame must not become a big message)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        whole = inflater.decompress(data + _DEFLATE_TAIL, limit + 1)
    except zlib.error:
        raise ProtocolViolation(1007, "bad compressed data") from None
    if len(whole) > limit or inflater.unconsumed_tail:
        raise ProtocolViolation(4008, "message too large")
    return whole


def payload_extent(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """(where the frame's mask or payload starts, payload length) of the frame at `at`,
    once its header is complete; for server and client frames alike."""
    if len(buf) - at < 2:
        return None
    length = buf[at + 1] & 0x7F
    if length == 126:
        return (at + 4, struct.unpack_from("!H", buf, at + 2)[0]) if len(buf) - at >= 4 else None
    if length == 127:
        return (at + 10, struct.unpack_from("!Q", buf, at + 2)[0]) if len(buf) - at >= 10 else None
    return at + 2, length


class TokenBucket:
    """Allows `rate` a second with bursts of twice that."""

    __slots__ = ("_at", "_capacity", "_rate", "_tokens")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = 2 * rate
        self._tokens = self._capacity
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(struct.pack("!H", code) + reason.encode()[:120], CLOSE)


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little")


Message = tuple[int, bytes]  # (opcode: TEXT, BINARY, CLOSE, PING or PONG; payload)


class FrameReader:
    """Feed bytes in, take whole messages out; raises ProtocolViolation. Frames are
    parsed in place and the buffer trimmed once per call, which matters at thousands
    of small inputs a second."""

    def __init__(self, *, max_message_bytes: int, max_frames_per_s: float, now: float,
                 deflate: bool = False) -> None:
        self._buffer = bytearray()
        self._max = max_message_bytes
        self._frames = TokenBucket(max_frames_per_s, now)
        self._deflate = deflate  # permessage-deflate was agreed: RSV1 marks compression
        self._fragments: list[bytes] = []
        self._fragment_bytes = 0  # of the message being reassembled, so far
        self._fragment_opcode = 0
        self._fragments_compressed = False
        self._skip = 0  # bytes of a frame being passed over (goodbye_seen) still to come

    def feed(self, data: bytes | memoryview) -> None:
        self._buffer += data

    @property
    def at_frame_start(self) -> bool:
        """Nothing held: no part of a frame, no fragments, nothing being passed over (the
        next bytes begin a frame, so another reader may take them: server/ws/wire.py)."""
        return not self._buffer and not self._fragments and not self._skip

    def count_frame(self, now: float) -> None:
        """One more frame toward the rate limit (a frame read elsewhere counts too)."""
        if not self._frames.take(now):
            raise ProtocolViolation(4008, "too many frames")

    def goodbye_seen(self) -> bool:
        """Once we have said goodbye, only the peer's close frame matters: every other
        frame is passed over whole, never unmasked or kept (one of any size is dropped
        as it streams past), so a client that floods costs a header walk. True once the
        peer's close frame has begun to arrive."""
        buf = self._buffer
        at = min(self._skip, len(buf))
        self._skip -= at
        try:
            while len(buf) - at >= 2:
                if buf[at] & 0x0F == CLOSE:
                    return True
                extent = payload_extent(buf, at)
                if extent is None:
                    return False
                offset, length = extent
                end = offset + (4 if buf[at + 1] & 0x80 else 0) + length
                if end > len(buf):
                    self._skip, at = end - len(buf), len(buf)
                    return False
                at = end
            return False
        finally:
            del buf[:at]

    def messages(self, now: float) -> list[Message]:
        """The whole messages fed so far (`now` on the caller's clock, for the frame rate)."""
        buf, offset, found = self._buffer, 0, []
        try:
            while (frame := self._frame_at(buf, offset)) is not None:
                self.count_frame(now)
                fin, opcode, payload, offset, compressed = frame
                if opcode in _CONTROL or (fin and opcode != CONTINUATION
                                          and not self._fragments):
                    found.append((opcode, inflate(payload, self._max) if compressed
                                  else payload))
                else:
                    whole = self._reassemble(fin, opcode, payload, compressed)
                    if whole is not None:
                        found.append(whole)
        finally:
            del buf[:offset]
        return found

    def _reassemble(self, fin: bool, opcode: int, payload: bytes,
                    compressed: bool) -> Message | None:
        if opcode == CONTINUATION:
            if not self._fragments:
                raise ProtocolViolation(1002, "continuation without a start")
            opcode = self._fragment_opcode
        elif self._fragments:
            raise ProtocolViolation(1002, "a new message inside a fragmented one")
        else:
            self._fragments_compressed = compressed
        self._fragments.append(payload)
        self._fragment_bytes += len(payload)
        if self._fragment_bytes > self._max:
            raise ProtocolViolation(4008, "message too large")
        if not fin:
            if len(self._fragments) >= MAX_FRAGMENTS:
                raise ProtocolViolation(4008, "too many fragments")
            self._fragment_opcode = opcode
            return None
        whole = b"".join(self._fragments)
        self._fragments, self._fragment_bytes = [], 0
        return opcode, inflate(whole, self._max) if self._fragments_compressed else whole

    def _frame_at(self, buf: bytearray, at: int) -> tuple[bool, int, bytes, int, bool] | None:
        """(fin, opcode, unmasked payload, offset after it, compressed) of a whole frame
        at `at`."""
        if len(buf) - at < 2:
            return None
        first, second = buf[at], buf[at + 1]
        opcode = first & 0x0F
        compressed = bool(first & RSV1) and self._deflate and opcode in (TEXT, BINARY)
        if first & 0x70 and not (compressed and first & 0x70 == RSV1):
            raise ProtocolViolation(1002, "reserved bits set")
        if opcode not in _OPCODES:
            raise ProtocolViolation(1002, "unknown opcode")
        if not second & 0x80:
            raise ProtocolViolation(1002, "client frames must be masked")
        extent = payload_extent(buf, at)
        if extent is None:
            return None
        offset, length = extent
        fin = bool(first & 0x80)
        if opcode in _CONTROL and (length > 125 or not fin):
            raise ProtocolViolation(1002, "bad control frame")
        if length > self._max:
            raise ProtocolViolation(4008, "frame too large")
        end = offset + 4 + length
        if len(buf) < end:
            return None
        return (fin, opcode, unmask(buf[offset + 4:end], buf[offset:offset + 4]), end,
                compressed)
