"""The API port: one listener, two paths.

Every connection's request head is read here first. `GET /v1/world/ws` with a
WebSocket upgrade stays on the world's fast path: our own handshake, then a
Session writing prebuilt frames straight into the raw socket (see
server/outlet.py). Every other connection is handed, head and all, to
hypercorn's own connection handler for the quart-trio app, so HTTP behaves
exactly as under `hypercorn.trio.serve`, whose startup and graceful shutdown
this mirrors (lifespan, keep-alive close, a deadline for what is in flight).

Behind a proxy (TRUSTED_PROXIES), a connection from it must first say whose it is: a
PROXY protocol header (server/proxy.py), read under the same deadline as the request
head; its address is then the client's, for the caps, the rate limits (hypercorn is
told it as the peer's) and the log lines. Anybody else's header is just bad HTTP.

Caps (docs/protocol.md): connections open at once per client address, and world
sockets per user; past either, the connection or the upgrade is refused with 429.
Whatever goes wrong while one connection is served ends that connection alone: it
is logged and counted, and the edge goes on serving the others.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections import Counter

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState
from hypercorn.utils import wrap_app
from quart import Quart

from auth.tokens import Claims, Tokens
from console.access import Access
from persistence.errors import Unauthenticated
from rules.api import LARGEST
from server import proxy
from server.config import Settings
from server.logs import CLIENT
from server.ws import codec as ws
from server.ws.hub import EpollHub
from server.ws.messages import MSGPACK, SUBPROTOCOL_V2, wire_for
from server.ws.outlet import FrameCache
from server.ws.session import CLOSE_LINGER_S, Session, authenticate, half_close
from server.ws.stats import WireStats
from zones.world import World

log = logging.getLogger(__name__)

WORLD_PATH = "/v1/world/ws"
HEAD_MAX_BYTES = 16 * 1024
RETRY_AFTER_S = 5  # a connection refused by a cap: one closes in about that time
# Refusals past the address cap that may wait at once for their client's goodbye (so that
# the 429 arrives whole); past these, one is closed at once: a flood of connections from
# one address costs a descriptor and a task each for no longer than an accept.
REFUSALS_LINGERING = 16


class _Endpoints:
    """What hypercorn reads of a connection's socket: the client (from a PROXY header,
    or the peer) and our own address."""

    def __init__(self, sock: socket.socket, client: str) -> None:
        peer = sock.getpeername()
        self.family = socket.AF_INET6 if ":" in client else socket.AF_INET
        self._client: tuple[str, int] = (client, peer[1])  # (its port is of no use to us)
        self._local: tuple[str, int] = tuple(sock.getsockname()[:2])

    def getpeername(self) -> tuple[str, int]:
        return self._client

    def getsockname(self) -> tuple[str, int]:
        return self._local


class _Replayed(trio.abc.HalfCloseableStream):
    """A socket stream that first yields bytes already read from it (the request head),
    from the client at `client`."""

    def __init__(self, sock: socket.socket, prefix: bytes, client: str) -> None:
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._prefix = prefix
        self._endpoints = _Endpoints(sock, client)

    @property
    def socket(self) -> _Endpoints:  # hypercorn reads the client's address here
        return self._endpoints

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    # hypercorn closes a connection whose request body was not read from the app's task,
    # which quart-trio is cancelling as the answer goes: unshielded, that close is cut
    # short and the client waits on a connection nobody serves any more.
    async def send_eof(self) -> None:
        with trio.CancelScope(shield=True):
            await self._stream.send_eof()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._stream.aclose()


async def send_all(sock: socket.socket, data: bytes, stats: WireStats) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        stats.bytes_sent += sent
        view = view[sent:]


async def _refuse_and_linger(conn: socket.socket, response: bytes, stats: WireStats) -> None:
    """Send `response`, half-close, and read on (discarding) until the client closes or
    CLOSE_LINGER_S pass: closing with its input unread would reset the connection and
    destroy the response in flight (see server/ws/session.py)."""
    await send_all(conn, response, stats)
    half_close(conn)
    with trio.move_on_after(CLOSE_LINGER_S):
        while True:
            await trio.lowlevel.wait_readable(conn)
            try:
                if not conn.recv(65536):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return


def _refusal(status: int, reason: str, code: str, message: str) -> bytes:
    # Ended with a newline, as every JSON answer (server/http/errors.py, raw_json_response).
    body = orjson.dumps({"error": {"code": code, "message": message}},
                        option=orjson.OPT_APPEND_NEWLINE)
    return ws.http_response(status, reason, body)


def _too_many(message: str) -> bytes:
    body = orjson.dumps({"error": {"code": "rate_limited", "message": message}},
                        option=orjson.OPT_APPEND_NEWLINE)
    return ws.http_response(429, "Too Many Requests", body, retry_after_s=RETRY_AFTER_S)


class Edge:
    def __init__(self, app: Quart, config: Config, settings: Settings, world: World,
                 tokens: Tokens, access: Access, stats: WireStats) -> None:
        self._asgi: AppWrapper = wrap_app(app, config.wsgi_max_body_size, None)
        self._config = config
        self._settings = settings
        self._world = world
        self._tokens = tokens
        self._access = access
        self._context = WorkerContext(None)
        self._state: dict[str, object] = {}
        self._sessions: set[Session] = set()
        self._connections: Counter[str] = Counter()  # open, per client address
        self._refusing: Counter[str] = Counter()  # refused, lingering, per client address
        self._sockets: Counter[uuid.UUID] = Counter()  # world sockets open, per user
        self._hub = EpollHub(move_limit=LARGEST)
        self._frames = FrameCache()
        self._stats = stats
        self._stopping = False

    async def serve(self, listener: socket.socket, *, shutdown: trio.Event,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on `listener` (server/listening.py) until `shutdown`, when it is closed
        first; report the URL once serving."""
        await self._serve(listener, Lifespan(self._asgi, self._config, self._state), shutdown,
                          task_status)

    async def _serve(self, listener: socket.socket, lifespan: Lifespan, shutdown: trio.Event,
                     task_status: trio.TaskStatus[str]) -> None:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as reading:
                reading.start_soon(self._hub.run)
                await reading.start(self._access.run, self.close_sessions)
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as accepting:
                        accepting.start_soon(self._accept, listener, connections)
                        host, port = listener.getsockname()[:2]
                        task_status.started(f"http://{_url_host(host)}:{port}")
                        await shutdown.wait()
                        self._stopping = True
                        accepting.cancel_scope.cancel()
                    listener.close()
                    for session in list(self._sessions):
                        session.close(1001, "server going away")
                    await self._context.terminated.set()  # hypercorn: close idle keep-alives
                    connections.cancel_scope.deadline = (
                        trio.current_time() + self._config.graceful_timeout)
                reading.cancel_scope.cancel()
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    def close_sessions(self, user: uuid.UUID | None, code: int, reason: str, *,
                       character: str | None = None, session: uuid.UUID | None = None) -> int:
        """Close `user`'s world sessions (only those playing `character`, or of the auth
        session `session`, if given; of `session` whoever's if `user` is None) with
        `code`: the console's kick and disable, a session's end. How many it closed."""
        closing = [s for s in self._sessions
                   if (user is None or s.user_id == user)
                   and (character is None or s.plays(character))
                   and (session is None or s.auth_session == session)]
        for each in closing:
            each.close(code, reason)
        return len(closing)

    async def _accept(self, listener: socket.socket, connections: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                conn, peer = listener.accept()
            except BlockingIOError:
                continue
            except OSError as exc:  # out of file descriptors, say: wait, do not spin
                log.warning("accept failed: %r", exc)
                await trio.sleep(0.1)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connections.start_soon(self._connection, conn, peer[0])

    async def _connection(self, conn: socket.socket, peer: str) -> None:
        """One connection, whatever happens ended alone: its client named (by a trusted
        proxy's header, or as the peer), then served within its address's cap."""
        deadline = trio.current_time() + self._settings.world_handshake_timeout_s
        try:
            address, early = peer, b""
            if proxy.trusted(peer, self._settings.trusted_proxies):
                with trio.move_on_at(deadline):
                    named = await self._proxy_header(conn, peer)
                if named is None:
                    return
                address, early = named
            CLIENT.set(address)  # the connection's log lines name it (hypercorn's too)
            await self._capped(conn, address, early, deadline)
        except Exception:
            self._stats.faults += 1
            log.exception("serving a connection failed; it is closed")
        finally:
            conn.close()  # also when hypercorn's close was cut short by a cancellation

    async def _proxy_header(self, conn: socket.socket, peer: str) -> tuple[str, bytes] | None:
        """(the client's address, what followed the header) from a trusted proxy's PROXY
        header; None if it sent none that is valid (logged, counted) or nothing at all."""
        data = bytearray()
        found = None
        try:
            while (found := proxy.parse(data)) is None:
                chunk = await _receive(conn)
                if not chunk:
                    break
                data += chunk
        finally:  # also when the deadline passes
            if data and not isinstance(found, proxy.Proxied):
                why = found.reason if found is not None else "an incomplete PROXY header"
                self._stats.proxy_refused += 1
                log.warning("a connection from the trusted proxy %s is closed: %s", peer, why)
        if not isinstance(found, proxy.Proxied):
            return None
        return found.address or peer, bytes(data[found.length:])

    async def _capped(self, conn: socket.socket, address: str, early: bytes,
                      deadline: float) -> None:
        """Serve the connection unless its address holds its cap of them already."""
        cap, held = self._settings.max_connections_per_address, self._connections
        if cap and held[address] >= cap:
            self._stats.refused["connections_per_address"] += 1
            if self._refusing[address] < REFUSALS_LINGERING:
                self._refusing[address] += 1
                try:
                    await _refuse_and_linger(conn, _too_many(
                        f"too many connections from your address (at most {cap})"),
                        self._stats)
                finally:
                    self._refusing[address] -= 1
                    if not self._refusing[address]:
                        del self._refusing[address]
            return
        held[address] += 1
        try:
            await self._route(conn, address, early, deadline)
        finally:
            held[address] -= 1
            if not held[address]:
                del held[address]

    async def _route(self, conn: socket.socket, address: str, early: bytes,
                     deadline: float) -> None:
        with trio.move_on_at(deadline) as reading:
            head, rest = await _read_head(conn, early)
        if reading.cancelled_caught or (head is None and not rest):
            return  # too slow to say anything, or closed
        if self._stopping:
            # A connection accepted before the stop whose first request came after: in
            # the graceful window only what was in flight is finished (hypercorn closes
            # kept-alive connections once their request is answered), not new requests.
            await _refuse_and_linger(conn, _refusal(
                503, "Service Unavailable", "unavailable", "the server is stopping"),
                self._stats)
            return
        replayed = (head + b"\r\n\r\n" if head is not None else b"") + rest
        if replayed.startswith(proxy.STARTS):  # a trusted proxy's was read: this one is not
            await _refuse_and_linger(conn, _refusal(
                400, "Bad Request", "validation_failed", proxy.UNTRUSTED), self._stats)
            return
        request = ws.parse_request_head(head) if head is not None else None
        if request is not None and request.path == WORLD_PATH:
            await self._world_session(conn, request, rest)
            return
        stream = _Replayed(conn, replayed, address)
        await TCPServer(self._asgi, self._config, self._context,
                        ConnectionState(self._state.copy()),
                        stream)  # type: ignore[arg-type]  # hypercorn asks for more than it uses

    async def _world_session(self, conn: socket.socket, request: ws.Request,
                             rest: bytes) -> None:
        """Answer the upgrade, then run the session, counted against its user's cap."""
        admitted = self._admit(request)
        if isinstance(admitted, bytes):  # a refusal
            with trio.move_on_after(self._settings.world_handshake_timeout_s):
                await _refuse_and_linger(conn, admitted, self._stats)
            return
        user_id = admitted.user_id
        self._sockets[user_id] += 1  # in the same step as _admit checked the cap
        try:
            with trio.move_on_after(self._settings.world_handshake_timeout_s):
                session = await self._upgrade(conn, request, rest, admitted)
            if session is None:
                return
            self._sessions.add(session)
            ended = self._access.ending(admitted)  # during the handshake: missed above
            if ended is not None:
                session.close(*ended)
            self._stats.sessions += 1
            try:
                await session.run()
            finally:
                self._sessions.discard(session)
                self._stats.sessions -= 1
        finally:
            self._sockets[user_id] -= 1
            if not self._sockets[user_id]:
                del self._sockets[user_id]

    async def _upgrade(self, conn: socket.socket, request: ws.Request, rest: bytes,
                       claims: Claims) -> Session | None:
        """Answer the upgrade: a Session after the 101, None after a refusal."""
        wire = wire_for(request.headers.get("sec-websocket-protocol"))
        deflate = ws.offers_deflate(request)
        response = ws.handshake_response(request, SUBPROTOCOL_V2 if wire is MSGPACK else None,
                                         deflate)
        if response is None:
            await _refuse_and_linger(conn, _refusal(
                400, "Bad Request", "validation_failed",
                "not a valid WebSocket (version 13) handshake"), self._stats)
            return None
        await send_all(conn, response, self._stats)
        if self._settings.world_send_buffer_bytes:
            # What the kernel holds for a client that does not read: past it, the outlet
            # sees the client behind, skips snapshots for it and, after WORLD_SLOW_CLOSE,
            # drops it. Left to grow (to 4 MiB), it held seconds of stale snapshots.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                            self._settings.world_send_buffer_bytes)
        return Session(conn, rest, claims=claims, tokens=self._tokens, world=self._world,
                       settings=self._settings, hub=self._hub, frames=self._frames,
                       stats=self._stats, wire=wire, deflate=deflate)

    def _admit(self, request: ws.Request) -> bytes | Claims:
        """The socket's token's claims, or the refusal to send."""
        if not request.is_websocket_upgrade:
            return _refusal(400, "Bad Request", "validation_failed", ws.NOT_AN_UPGRADE)
        try:
            claims = authenticate(self._tokens, request.headers.get("authorization"),
                                  request.query("token"))
        except Unauthenticated as exc:
            return _refusal(401, "Unauthorized", exc.code, exc.message)
        origin = request.headers.get("origin")
        allowed = self._settings.world_allowed_origins
        if (origin is not None and "*" not in allowed and origin.rstrip("/") not in allowed
                and not _same_origin(origin, request.headers.get("host"))):
            return _refusal(403, "Forbidden", "forbidden", "this origin may not open the world")
        cap = self._settings.world_max_sockets_per_user
        if self._sockets[claims.user_id] >= cap:
            self._stats.refused["sockets_per_user"] += 1
            return _too_many(f"too many world sockets open for this account (at most {cap})")
        return claims


def _same_origin(origin: str, host: str | None) -> bool:
    """A page served by this very server (the browser client at /, docs/client.md): its
    origin names the host and port the browser asked for. A page of another site cannot
    forge Origin, so it is still refused."""
    scheme, _, netloc = origin.rstrip("/").partition("://")
    return (host is not None and scheme in ("http", "https")
            and netloc.lower() == host.strip().lower())


async def _read_head(conn: socket.socket, early: bytes) -> tuple[bytes | None, bytes]:
    """(the request head without its blank line, what followed it), from `early` (read
    already) and the socket; head None if the peer closed first or sent more than
    HEAD_MAX_BYTES without one."""
    data = bytearray(early)
    end = data.find(b"\r\n\r\n")
    while end < 0:  # each byte is looked at once or twice, however the head trickles in
        if len(data) > HEAD_MAX_BYTES:
            return None, bytes(data)
        chunk = await _receive(conn)
        if not chunk:
            return None, bytes(data)
        searched = max(0, len(data) - 3)
        data += chunk
        end = data.find(b"\r\n\r\n", searched)
    return bytes(data[:end]), bytes(data[end + 4:])


async def _receive(conn: socket.socket) -> bytes:
    """What the socket has next; b"" once the peer has closed (or broken) it."""
    while True:
        await trio.lowlevel.wait_readable(conn)
        try:
            return conn.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            return b""


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

