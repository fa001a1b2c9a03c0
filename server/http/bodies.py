"""A request's JSON body, read within its limits (docs/protocol.md, "Errors (HTTP)"):
what every route that takes a body reads it with."""

from __future__ import annotations

import orjson
import trio
from quart import g, request

from server.config import Settings
from server.http.errors import BadJson, BodyTooSlow, TooLarge, UnsupportedMediaType


async def json_object(settings: Settings) -> dict[str, object]:
    """The request body as a JSON object, or the docs/protocol.md error for why not."""
    max_bytes = settings.max_body_bytes
    if request.content_length is not None and request.content_length > max_bytes:
        raise TooLarge(f"the body is over {max_bytes} bytes")
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    with trio.move_on_at(g.body_deadline) as reading:
        raw = await request.get_data(as_text=False)  # over MAX_CONTENT_LENGTH: 413
    if reading.cancelled_caught:
        raise BodyTooSlow(f"the body did not arrive within {settings.http_body_timeout_s:g} s")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadJson("the body must be a JSON object")
    return body


async def optional_json_object(settings: Settings) -> dict[str, object]:
    """As json_object, but no body at all (no length, or 0) is an empty object."""
    if request.content_length == 0 or (request.content_length is None
                                       and "transfer-encoding" not in request.headers):
        return {}
    return await json_object(settings)
