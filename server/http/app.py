"""The HTTP API: quart-trio routes (docs/protocol.md); errors map to HTTP in errors.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio
from quart import Quart, Response, g, request, send_from_directory
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, NotFound

from characters.service import character_json
from persistence.errors import DomainError
from rules.shooter.map import read_map
from server.config import Settings
from server.http.admin import admin_routes
from server.http.bodies import json_object, optional_json_object
from server.http.errors import (
    domain_error_response,
    error_response,
    framework_error_response,
    json_response,
    raw_json_response,
)
from server.http.guard import guard
from server.http.me import read_me
from server.http.openapi import document
from server.metrics import Metrics
from server.services import Services
from server.ws.codec import NOT_AN_UPGRADE, UPGRADE_FIRST

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
STATIC = Path(__file__).parent / "static"
# The browser client's files, by name: a request names one of them or is 404 (the file
# system is never asked about a name it could choke on: too long, say).
STATIC_FILES = frozenset(path.name for path in STATIC.iterdir() if path.is_file())


def world_map_json(settings: Settings) -> dict[str, object]:
    """GET /v1/world/map (docs/protocol.md): the bounds, the view radius and the map file's
    walls and spawn points, for a client to draw."""
    found = read_map(settings.world_map)
    return {"bounds": list(settings.world_bounds), "view_radius": settings.world_view_radius,
            "walls": [[w.min_x, w.min_y, w.max_x, w.max_y] for w in found.walls],
            "spawns": [list(spawn) for spawn in found.spawns]}


def create_app(services: Services, metrics: Metrics, *, serves_metrics: bool = True) -> Quart:
    """The API; `serves_metrics` False when /metrics has a port of its own (METRICS_PORT)."""
    app = QuartTrio("outpost", static_folder=None)  # /static is ours (static_file)
    settings = services.settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Quart's own limit on reading a body (60 s by default, from each read's start): never
    # later than ours, which runs from the request's start (before_request below).
    app.config["BODY_TIMEOUT"] = settings.http_body_timeout_s
    # Each request's id, log line and metrics; the last word on whatever escapes the app.
    guard(app, requests=metrics.http_requests, seconds=metrics.http_seconds)

    @app.before_request
    async def begin() -> None:
        # One deadline for the whole body, however it trickles in: a client sending a
        # byte a second must not hold a connection and a task for long.
        g.body_deadline = trio.current_time() + settings.http_body_timeout_s

    async def drain(response: Response) -> None:
        """Read the body of a request answered without it (415, 405, 401...). hypercorn
        keeps the connection alive only once the body is in; otherwise it closes it, but
        from a task quart-trio cancels as the answer goes, so the close may never happen
        and the client's next request on that connection waits for nothing (server/ws/
        edge.py shields that close). Not past the request's body deadline; and a body
        over the limit is not worth waiting for."""
        if request.content_length == 0 or (request.content_length is None
                                           and "transfer-encoding" not in request.headers):
            return
        if (request.content_length or 0) <= settings.max_body_bytes:
            with trio.move_on_at(g.body_deadline):
                try:
                    await request.get_data(as_text=False)
                    return
                except HTTPException:  # chunked, and over the limit after all
                    pass
        response.headers["Connection"] = "close"

    @app.after_request
    async def drained(response: Response) -> Response:
        await drain(response)
        return response

    def client_address() -> str:
        """What rate limits count by: the client's address, which the edge gives hypercorn
        as the peer's (behind a trusted proxy, the one its PROXY header names)."""
        return request.remote_addr or "unknown"

    def current_user() -> uuid.UUID:
        return services.tokens.user_from_header(request.headers.get("Authorization"))

    @app.errorhandler(DomainError)
    async def domain_error(exc: DomainError) -> Response:
        return domain_error_response(exc)

    @app.errorhandler(HTTPException)
    async def framework_error(exc: HTTPException) -> Response:
        return framework_error_response(exc)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "an unexpected error occurred")

    @app.post("/v1/auth/register")
    @app.post("/api/auth/register")
    async def register() -> Response:
        body = await json_object(settings)
        issued = await services.accounts.register(body, client_address())
        return json_response(issued.json(), 201)

    @app.post("/v1/auth/login")
    @app.post("/api/auth/login")
    async def login() -> Response:
        body = await json_object(settings)
        issued = await services.accounts.login(body, client_address())
        return json_response(issued.json())

    @app.post("/v1/auth/refresh")
    async def refresh() -> Response:
        body = await json_object(settings)
        issued = await services.sessions.refresh(body)
        return json_response(issued.json())

    @app.post("/v1/auth/logout")
    async def logout() -> Response:
        authorization = request.headers.get("Authorization")
        body = await optional_json_object(settings)  # none: the bearer's session ends
        await services.sessions.logout(authorization, body)
        return Response(b"", status=204)

    @app.post("/v1/characters")
    async def create_character() -> Response:
        user_id = current_user()
        body = await json_object(settings)
        created = await services.characters.create(user_id, body)
        return json_response(character_json(created), 201)

    @app.get("/v1/characters")
    async def list_characters() -> Response:
        listed = await services.characters.list_json(current_user())
        return raw_json_response(b'{"characters":' + listed + b"}")

    @app.get("/v1/me")
    async def me() -> Response:
        return json_response(await services.pg.transact(read_me, current_user()))

    # The edge answers /v1/world/ws itself when it is a connection's first request;
    # these answer it later on a kept-alive HTTP connection, which hypercorn serves.
    @app.get("/v1/world/ws")
    async def world_over_plain_http() -> Response:
        return error_response(400, "validation_failed", NOT_AN_UPGRADE)

    @app.websocket("/v1/world/ws")
    async def world_on_a_kept_alive_connection() -> Response:
        return error_response(400, "validation_failed", UPGRADE_FIRST)

    @app.get("/v1/world/zones")
    async def world_zones() -> Response:
        return json_response({"zones": services.world.zone_list()})

    # What a client draws of the world: fixed for the process's life (WORLD_MAP was checked
    # as it started), so made once.
    world_map = world_map_json(settings)

    @app.get("/v1/world/map")
    async def world_map_route() -> Response:
        return json_response(world_map)

    app.register_blueprint(admin_routes(services))

    @app.get("/")
    async def index() -> Response:
        return await send_from_directory(STATIC, "index.html")

    @app.get("/console")
    async def console_page() -> Response:
        """The operator console (docs/operations.md, "The console"): its data comes from
        /v1/admin/, which only operators' tokens open."""
        return await send_from_directory(STATIC, "console.html")

    @app.get("/static/<path:filename>")
    async def static_file(filename: str) -> Response:
        """The browser client (docs/client.md): its scripts and styles."""
        if filename not in STATIC_FILES:
            raise NotFound("no such file")
        return await send_from_directory(STATIC, filename)

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(document(settings))

    if serves_metrics:  # else only on METRICS_PORT: the public port does not show them

        @app.get("/metrics")
        async def prometheus() -> Response:
            return metrics.exposition()

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        checks: dict[str, bool] = {}

        async def check(name: str, probe: Callable[[], Awaitable[bool]]) -> None:
            with trio.move_on_after(READY_TIMEOUT_S):
                checks[name] = await probe()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check, "postgres", services.pg.ping)
            nursery.start_soon(check, "redis", services.cache.ping)
            nursery.start_soon(check, "nats", partial(services.bus.flush, READY_TIMEOUT_S))
        checks = {name: checks.get(name, False) for name in ("postgres", "redis", "nats")}
        if all(checks.values()):
            return json_response({"status": "ready", "checks": checks})
        down = ", ".join(name for name, ok in checks.items() if not ok)
        return json_response({"error": {"code": "unavailable", "message": f"not ready: {down}"},
                              "checks": checks}, 503)

    return app
