"""A hand-made WebSocket client: the handshake, masked client frames, and server frames
scanned in place. The swarm drives hundreds of these; the tests use the same pieces
to misbehave on purpose (floods, oversized frames, bad masks) where a WebSocket
library would refuse to.

trio-websocket parses and decodes every frame into a str in a task of its own; at
hundreds of clients receiving ~50 KB snapshots 20 times a second that needs
several cores, so a single-core swarm would measure itself rather than the
server. `RawWebSocket` puts every client socket in one EpollHub (the server's own
epoll demultiplexer): one wakeup reads every socket that has data, and each
message's payload (text for v1, binary for v2) is handed to a callback as (buffer,
start, end). The stream helpers at the
end (`open_upgraded`, `received_until`, `close_of`) do the same over a trio stream,
one socket at a time, for tests.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

import trio

from server.ws.codec import BINARY, CLOSE, RSV1, TEXT, payload_extent, unmask
from server.ws.hub import EpollHub
from server.ws.wire import Move

OnMessage = Callable[[bytearray, int, int, bool], None]  # buffer, start, end, compressed
DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
TIMEOUT_S = 5.0


def upgrade_request(host: str, target: str, *, origin: str | None = None,
                    protocol: str | None = None, extensions: str | None = None) -> bytes:
    """A WebSocket upgrade request for `target` (path and query), offering `protocol`
    and `extensions`."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            + (f"Origin: {origin}\r\n" if origin else "")
            + (f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else "")
            + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "")
            + "\r\n").encode()


def client_frame(payload: bytes, opcode: int = TEXT, *, fin: bool = True, masked: bool = True,
                 rsv: int = 0, length: int | None = None) -> bytes:
    """One client frame, masked as a browser masks it; `length` overrides the declared
    payload length (for a header that promises more than follows)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + unmask(payload, mask)  # masking is the same XOR


def frame_at(buf: bytes | bytearray, offset: int) -> tuple[int, int, int] | None:
    """(opcode, payload start, payload end) of a whole unmasked frame at `offset`."""
    extent = payload_extent(buf, offset)
    if extent is None:
        return None
    start, length = extent
    end = start + length
    return (buf[offset] & 0x0F, start, end) if end <= len(buf) else None


def close_code(payload: bytes | bytearray) -> int:
    """The code of a close frame's payload (1005: none given)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


class RawWebSocket:
    def __init__(self, sock: socket.socket, buffered: bytes, on_message: OnMessage,
                 *, opcode: int = TEXT) -> None:
        self._sock = sock
        self._buffer = bytearray(buffered)
        self._on_message = on_message
        self._opcode = opcode  # TEXT for v1, BINARY for v2
        self.closed = trio.Event()
        self.close_code = 0

    @classmethod
    async def connect(cls, url: str, on_message: OnMessage, *, protocol: str | None = None,
                      deflate: bool = False) -> RawWebSocket:
        """Connect and upgrade (offering `protocol`, and permessage-deflate if `deflate`:
        this client sends uncompressed and hands compressed messages over as they
        came); raises ConnectionRefusedError with the HTTP status, and when the server
        does not choose what was offered."""
        parts = urlsplit(url)
        tsock = trio.socket.socket()
        await tsock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        sock = socket.socket(fileno=tsock.detach())
        sock.setblocking(False)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.send(upgrade_request(parts.netloc, target, protocol=protocol,
                                  extensions=DEFLATE_OFFER if deflate else None))
        data = b""
        while b"\r\n\r\n" not in data:
            await trio.lowlevel.wait_readable(sock)
            chunk = sock.recv(65536)
            if not chunk:
                sock.close()
                raise ConnectionResetError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise ConnectionRefusedError(head.split(b"\r\n")[0].decode())
        if protocol and f"sec-websocket-protocol: {protocol}".encode() not in head.lower():
            sock.close()
            raise ConnectionRefusedError(f"the server did not choose {protocol}")
        if deflate and b"permessage-deflate" not in head:
            sock.close()
            raise ConnectionRefusedError("the server did not agree to permessage-deflate")
        return cls(sock, rest, on_message, opcode=BINARY if protocol else TEXT)

    def fileno(self) -> int:
        return self._sock.fileno()

    async def send(self, payload: bytes) -> None:
        """One message, in a frame of this socket's kind."""
        view = memoryview(client_frame(payload, self._opcode))
        while view:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)

    def on_input(self, moves: list[Move] | None, data: bytes | None) -> None:
        """Called by the hub with what arrived (no moves: a client's socket is read as
        bytes) and hand over every whole message."""
        if self.closed.is_set():
            return
        if data is None:
            self._close(1006)
            return
        self._buffer += data
        self._drain()

    def _drain(self) -> None:
        buf, offset = self._buffer, 0
        while (frame := frame_at(buf, offset)) is not None:
            opcode, start, end = frame
            if opcode == self._opcode:
                self._on_message(buf, start, end, bool(buf[offset] & RSV1))
            elif opcode == CLOSE:
                self._close(close_code(buf[start:end]))
                return
            offset = end
        del buf[:offset]

    def _close(self, code: int) -> None:
        self.close_code = code
        self.closed.set()

    def aclose(self, hub: EpollHub) -> None:
        hub.unregister(self._sock.fileno())
        self._sock.close()


# --- one socket over a trio stream, for tests ----------------------------------------------

async def open_upgraded(url: str, target: str, *, origin: str | None = None,
                        rcvbuf: int | None = None, protocol: str | None = None,
                        extensions: str | None = None) -> tuple[trio.SocketStream, bytes]:
    """Connect to `url` (http://host:port), send an upgrade for `target`; the stream and
    what the server answered up to the end of its response head (and what came with it)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    sock = trio.socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, parts.port or 80))
    stream = trio.SocketStream(sock)
    # Host with its port, as browsers send it (the server's own origin is matched on it).
    await stream.send_all(upgrade_request(parts.netloc, target, origin=origin,
                                          protocol=protocol, extensions=extensions))
    return stream, await received_until(stream, b"\r\n\r\n")


async def received_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    """What the server sent, up to and including `marker` (and what came with it)."""
    data = b""
    with trio.fail_after(TIMEOUT_S):
        while marker not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed before {marker!r}: {data!r}"
            data += chunk
    return data


async def close_of(stream: trio.abc.ReceiveStream, buffered: bytes = b"",
                   timeout_s: float = 2 * TIMEOUT_S) -> tuple[int, str]:
    """Read server frames until a close frame: its code and reason. Raises
    ConnectionResetError (or AssertionError on EOF) if the connection ends without one."""
    data = bytearray(buffered)
    with trio.fail_after(timeout_s):
        while True:
            offset = 0
            while (frame := frame_at(data, offset)) is not None:
                opcode, start, end = frame
                if opcode == CLOSE:
                    return close_code(data[start:end]), data[start + 2:end].decode()
                offset = end
            del data[:offset]
            chunk = await stream.receive_some(65536)
            assert chunk, "the connection ended without a close frame"
            data += chunk
