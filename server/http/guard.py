"""Around the quart-trio app, for every HTTP request: its id, its log line and metrics,
and an answer in the docs/protocol.md error shape whatever escapes the app.

Quart turns an exception of a route into our 500 (server/http/app.py), but not all of
them: a BaseException other than cancellation (asyncio's CancelledError out of the
asyncio bridge, SystemExit, KeyboardInterrupt), a group holding one, a failure in an
after_request hook or a route's bad return value went on to hypercorn, which answered
an empty 500 that no metric counted and no log line tied to its request. Here any of
them ends in its own request: logged once with the request's id and the traceback,
counted as a 500, and answered 500 `internal` if nothing was sent yet (an answer that
had begun cannot be taken back: hypercorn closes a connection whose answer never ended).
Cancellation alone goes on: it is the server's (shutdown) or the client's (gone), and
hypercorn's to handle.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from prometheus_client import Counter, Histogram
from quart import Quart, request

from server.logs import REQUEST

log = logging.getLogger(__name__)

# Where the app names the route it matched, for the metrics' label (the pattern, not the
# path: one label per route); a request that matched none is `unmatched`.
ROUTE = "outpost.route"
UNMATCHED = "unmatched"
LOGGED_PATH = 256  # characters of a request path a log line keeps
# A client may name its request (X-Request-Id) for the log lines; anything else gets one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INTERNAL = orjson.dumps({"error": {"code": "internal",
                                    "message": "an unexpected error occurred"}},
                         option=orjson.OPT_APPEND_NEWLINE)  # as every answer (errors.py)

Asgi = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


def request_id(given: bytes | None) -> str:
    """The client's X-Request-Id if it is short and plain, else a new one."""
    text = given.decode("latin-1") if given is not None else ""
    return text if _REQUEST_ID.fullmatch(text) else uuid.uuid4().hex[:16]


def _split(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """(what failed, the cancellation): either may be None."""
    if isinstance(exc, BaseExceptionGroup):
        cancelled, failed = exc.split(trio.Cancelled)
        return failed, cancelled
    if isinstance(exc, trio.Cancelled):
        return None, exc
    return exc, None


def guard(app: Quart, *, requests: Counter, seconds: Histogram) -> None:
    """Put `app`'s requests in the guard's hands: their ids, their lines and metrics (by
    route and status), and the answer to whatever no error handler of the app takes."""
    # Quart would answer those with its own 500 (code http_error), logged apart from its
    # request, after running the after_request hooks a second time: let them through.
    app.config["PROPAGATE_EXCEPTIONS"] = True
    app.asgi_app = RequestGuard(  # type: ignore[method-assign]
        app.asgi_app, requests=requests, seconds=seconds)

    @app.before_request
    async def name_the_route() -> None:
        """For the guard's metrics: the route's pattern (one label per route)."""
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        request.scope[ROUTE] = rule  # type: ignore[literal-required]


class RequestGuard:
    def __init__(self, app: Asgi, *, requests: Counter, seconds: Histogram) -> None:
        self._app = app
        self._requests = requests  # by route and status
        self._seconds = seconds  # by route

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        began = time.perf_counter()
        given = next((v for k, v in scope["headers"] if k.lower() == b"x-request-id"), None)
        named = request_id(given)
        REQUEST.set(named)  # this request's log lines name it, in every task it starts
        status = 0
        answered = False

        async def answer(event: ASGISendEvent) -> None:
            nonlocal status, answered
            if event["type"] == "http.response.start":
                status = event["status"]
                event = {**event, "headers": [*event.get("headers", ()),
                                              (b"x-request-id", named.encode())]}
            elif event["type"] == "http.response.body" and not event.get("more_body"):
                answered = True
            await send(event)

        async def listen() -> ASGIReceiveEvent:
            event = await receive()
            if event["type"] == "http.disconnect" and answered:
                # hypercorn says so from within the send of the answer's end, and
                # quart-trio cancels the request's tasks at once: that send, which goes
                # on to start the connection's keep-alive timer (or to close it), was
                # cut short, and a kept-alive connection waited for its next request
                # forever. The app ends by itself once that send is done.
                await trio.sleep_forever()
            return event

        try:
            await self._app(scope, listen, answer)
        except BaseException as exc:
            failed, cancelled = _split(exc)
            if failed is None:
                raise
            log.error("%s %s failed: %r", scope["method"], scope["path"], failed,
                      exc_info=failed)
            if cancelled is not None:
                raise cancelled from None  # logged: hypercorn must not log it again
            if not status:
                await answer({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_INTERNAL)).encode())]})
                await answer({"type": "http.response.body", "body": _INTERNAL,
                              "more_body": False})
            status = 500  # a bug, for the alerts, whatever the client was told
        if status:  # else the client left before its answer: nothing was answered
            self._account(scope, status, time.perf_counter() - began)

    def _account(self, scope: Scope, status: int, took: float) -> None:
        """Count and log the answer (the path only: a query string may hold a token)."""
        assert scope["type"] == "http"
        route = str(scope.get(ROUTE, UNMATCHED))
        self._requests.labels(route, str(status)).inc()
        self._seconds.labels(route).observe(took)
        path = scope["path"]  # a client's, up to the head's 16 KiB: the line keeps its start
        shown = path if len(path) <= LOGGED_PATH else path[:LOGGED_PATH] + "..."
        log.info("%s %s %d in %.1f ms", scope["method"], shown, status, 1000 * took)
