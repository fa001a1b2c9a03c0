"""The one place that maps errors to HTTP (docs/protocol.md, "Errors (HTTP)"): the
status of every error code, the error body, and the errors only a request body meets."""

from __future__ import annotations

import orjson
from quart import Response
from werkzeug.exceptions import HTTPException

from persistence.errors import DomainError, RateLimited

STATUS = {
    "validation_failed": 400, "bad_json": 400, "unauthenticated": 401,
    "invalid_credentials": 401, "forbidden": 403, "not_found": 404,
    "method_not_allowed": 405, "conflict": 409, "too_large": 413,
    "unsupported_media_type": 415, "rate_limited": 429, "internal": 500,
    "unavailable": 503, "zone_unavailable": 503,
}
# HTTP errors raised by the framework itself (unknown route, body over the limit...).
_FRAMEWORK_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class BadJson(DomainError):
    code = "bad_json"


class TooLarge(DomainError):
    code = "too_large"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"


class BodyTooSlow(DomainError):
    """The body did not arrive by its deadline (HTTP_BODY_TIMEOUT). The protocol has no
    408: the request cannot be valid without its body, and its connection closes."""

    code = "validation_failed"


def json_response(body: object, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return raw_json_response(orjson.dumps(body), status, headers)


def raw_json_response(body: bytes, status: int = 200,
                      headers: dict[str, str] | None = None) -> Response:
    """`body`, one JSON document, ended with a newline as every JSON answer of ours is:
    whitespace to a JSON parser, and a shell's prompt after `curl` starts on a line of
    its own."""
    return Response(body + b"\n", status=status, headers=headers,
                    content_type="application/json")


def error_response(status: int, code: str, message: str, fields: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    error: dict[str, object] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return json_response({"error": error}, status, headers)


def domain_error_response(exc: DomainError) -> Response:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimited) else None
    return error_response(STATUS.get(exc.code, 500), exc.code, exc.message, exc.fields, headers)


def framework_error_response(exc: HTTPException) -> Response:
    """The framework's own errors (an unknown path, another method) in the error shape
    of every answer, on the API port and on METRICS_PORT alike."""
    status = exc.code or 500
    return error_response(status, _FRAMEWORK_CODES.get(status, "http_error"),
                          exc.description or exc.name)
