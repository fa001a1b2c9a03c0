"""A lean WebSocket client for big swarms: the handshake, masked text frames out, and
server frames in, scanned in place without copying or decoding them.

trio-websocket parses and decodes every frame into a str in a task of its own; at
hundreds of clients receiving ~50 KB snapshots 20 times a second that needs
several cores, so a single-core swarm would measure itself rather than the
server. Here every client socket sits in one EpollHub (the server's own
epoll demultiplexer): one wakeup reads every socket that has data, and each
text payload is handed to a callback as (buffer, start, end).
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

import trio

from server.ws.codec import CLOSE, TEXT, payload_extent, unmask
from server.ws.hub import EpollHub

OnText = Callable[[bytearray, int, int], None]
RECV_BYTES = 1 << 18


class RawWebSocket:
    def __init__(self, sock: socket.socket, buffered: bytes, on_text: OnText) -> None:
        self._sock = sock
        self._buffer = bytearray(buffered)
        self._chunk = bytearray(RECV_BYTES)
        self._on_text = on_text
        self.closed = trio.Event()
        self.close_code = 0

    @classmethod
    async def connect(cls, url: str, on_text: OnText) -> RawWebSocket:
        """Connect and upgrade; raises ConnectionRefusedError with the HTTP status."""
        parts = urlsplit(url)
        tsock = trio.socket.socket()
        await tsock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        sock = socket.socket(fileno=tsock.detach())
        sock.setblocking(False)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.send((f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
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
        return cls(sock, rest, on_text)

    def fileno(self) -> int:
        return self._sock.fileno()

    async def send_text(self, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        header = (struct.pack("!BB", 0x80 | TEXT, 0x80 | n) if n < 126
                  else struct.pack("!BBH", 0x80 | TEXT, 0x80 | 126, n))
        frame = header + mask + unmask(payload, mask)
        view = memoryview(frame)
        while view:
            try:
                view = view[self._sock.send(view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)

    def on_readable(self) -> None:
        """Called by the hub: take what arrived and hand over every whole text frame."""
        while not self.closed.is_set():
            try:
                received = self._sock.recv_into(self._chunk)
            except BlockingIOError:
                break
            except OSError:
                received = 0
            if not received:
                self._close(1006)
                return
            self._buffer += memoryview(self._chunk)[:received]
            if received < RECV_BYTES:
                break
        self._drain()

    def _drain(self) -> None:
        buf, offset = self._buffer, 0
        while (frame := _frame_at(buf, offset)) is not None:
            opcode, start, end = frame
            if opcode == TEXT:
                self._on_text(buf, start, end)
            elif opcode == CLOSE:
                self._close(int.from_bytes(buf[start:start + 2], "big") if end > start
                            else 1005)
                return
            offset = end
        del buf[:offset]

    def _close(self, code: int) -> None:
        self.close_code = code
        self.closed.set()

    def aclose(self, hub: EpollHub) -> None:
        hub.unregister(self._sock.fileno())
        self._sock.close()


def _frame_at(buf: bytearray, offset: int) -> tuple[int, int, int] | None:
    """(opcode, payload start, payload end) of a whole unmasked frame at `offset`."""
    extent = payload_extent(buf, offset)
    if extent is None:
        return None
    start, length = extent
    end = start + length
    return (buf[offset] & 0x0F, start, end) if end <= len(buf) else None
