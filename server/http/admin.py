"""The operator console's HTTP routes, under /v1/admin/ (docs/protocol.md, "Operator
console"). Each one asks the console whether the token is an operator's before it reads
anything else: 401 without a valid token, 403 for anyone else."""

from __future__ import annotations

import uuid

from quart import Blueprint, Response, request

from server.http.bodies import json_object
from server.http.errors import json_response
from server.http.me import read_me
from server.services import Services

PROVISIONED = ("player", "progression", "buildings", "active_character_id")


def admin_routes(services: Services) -> Blueprint:
    admin = Blueprint("admin", __name__, url_prefix="/v1/admin")
    console = services.console

    async def operator() -> uuid.UUID:
        user = services.tokens.user_from_header(request.headers.get("Authorization"))
        return await console.operator(user)

    async def with_parts(account: dict[str, object]) -> Response:
        """The account, and what provisioning made of it (as its own GET /v1/me)."""
        me = await services.pg.transact(read_me, uuid.UUID(str(account["user_id"])))
        return json_response({**account, **{part: me[part] for part in PROVISIONED}})

    @admin.get("/zones")
    async def zones() -> Response:
        await operator()
        return json_response({"zones": console.zones()})

    @admin.get("/zones/<zone_id>/players")
    async def players(zone_id: str) -> Response:
        await operator()
        return json_response(await console.players(zone_id))

    @admin.post("/characters/<character_id>/kick")
    async def kick(character_id: str) -> Response:
        return json_response(await console.kick(await operator(), character_id))

    @admin.post("/characters/<character_id>/move")
    async def move(character_id: str) -> Response:
        who = await operator()
        body = await json_object(services.settings)
        return json_response(await console.move(who, character_id, body.get("zone")))

    @admin.get("/users/<who>")
    async def account(who: str) -> Response:
        await operator()
        return await with_parts(await console.account(who))

    @admin.post("/users/<who>/disable")
    async def disable(who: str) -> Response:
        return await with_parts(await console.disable(await operator(), who, disabled=True))

    @admin.post("/users/<who>/enable")
    async def enable(who: str) -> Response:
        return await with_parts(await console.disable(await operator(), who, disabled=False))

    return admin
