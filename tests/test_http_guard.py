"""server/http/guard.py: whatever one HTTP request makes the app raise ends in that
request, as a 500 in the docs/protocol.md error shape (if its answer had not begun),
logged once with the request's id and traceback, and counted; cancellation alone goes
on untouched; every answer carries its request id.

Rules: the units drive a small quart-trio app through ASGI, as hypercorn does, with
`guard` applied as create_app applies it (no server, no sockets); the live tests make a
real route of a real api process fail (its Postgres call raises what the test injects)
and check the answer, the one log line, the metric and the next request. The request id
parser has a property test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from quart import Response, request
from quart_trio import QuartTrio

from server.http.guard import guard, request_id
from server.http.me import read_me
from server.process import Running
from tests.helpers import Lines, assert_error, bearer, metric, register


class Odd(BaseException):
    """Neither an Exception nor a cancellation: what a library may raise all the same."""


FAILURES: dict[str, BaseException] = {
    "exception": RuntimeError("a bug"),
    "group": ExceptionGroup("from a nursery", [RuntimeError("a bug in a child")]),
    "base": Odd("odd"),
    "asyncio-cancelled": asyncio.CancelledError(),  # out of the asyncio bridge
    "system-exit": SystemExit(3),
    "keyboard-interrupt": KeyboardInterrupt(),
    "base-group": BaseExceptionGroup("from a nursery", [Odd("in a child")]),
}


class Metrics:
    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.requests = Counter("requests", "", ["route", "status"], registry=registry)
        self.seconds = Histogram("seconds", "", ["route"], registry=registry)

    def count(self, route: str, status: str) -> float:
        return self.requests.labels(route, status)._value.get()


def app_failing_with(failure: BaseException, metrics: Metrics) -> QuartTrio:
    app = QuartTrio("guarded")

    @app.get("/raises")
    async def raises() -> Response:
        raise failure

    @app.get("/mid-body")
    async def mid_body() -> Response:
        async def body() -> Any:
            yield b"the start"
            raise failure
        return Response(body())

    @app.get("/after-hook")
    async def after_hook() -> Response:
        return Response(b"fine")

    @app.get("/bad-return")
    async def bad_return() -> Any:
        return 12345

    @app.after_request
    async def hook(response: Response) -> Response:
        if request.path == "/after-hook":
            raise failure
        return response

    guard(app, requests=metrics.requests, seconds=metrics.seconds)
    return app


async def call(app: QuartTrio, path: str,
               headers: list[tuple[bytes, bytes]] | None = None) -> list[dict[str, Any]]:
    """One GET through ASGI; what the app sent."""
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()
        raise AssertionError

    async def send(event: Any) -> None:
        sent.append(event)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers or [],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "extensions": {}}
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


def answer_of(sent: list[dict[str, Any]]) -> tuple[int, dict[bytes, bytes], bytes]:
    starts = [e for e in sent if e["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    body = b"".join(e.get("body", b"") for e in sent if e["type"] == "http.response.body")
    return starts[0]["status"], dict(starts[0]["headers"]), body


@pytest.mark.parametrize("kind", FAILURES)
@pytest.mark.parametrize("path", ["/raises", "/after-hook"])
async def test_a_failure_is_a_500_in_the_error_shape_logged_once(
    kind: str, path: str, lines: Lines
) -> None:
    metrics = Metrics()
    app = app_failing_with(FAILURES[kind], metrics)
    status, headers, body = answer_of(await call(app, path, [(b"x-request-id", b"req-7")]))
    assert (status, orjson.loads(body)) == (
        500, {"error": {"code": "internal", "message": "an unexpected error occurred"}})
    assert headers[b"x-request-id"] == b"req-7"
    assert headers[b"content-type"] == b"application/json"
    assert body.endswith(b"}\n")  # as every JSON answer
    errors = lines.errors()
    assert len(errors) == 1, errors
    assert errors[0]["request"] == "req-7" and "Traceback" in errors[0]["error"], errors[0]
    assert metrics.count(path, "500") == 1


async def test_a_bad_return_value_is_a_500_in_the_error_shape(lines: Lines) -> None:
    metrics = Metrics()
    status, _, body = answer_of(await call(app_failing_with(Odd(), metrics), "/bad-return"))
    assert status == 500 and orjson.loads(body)["error"]["code"] == "internal"
    assert len(lines.errors()) == 1
    assert metrics.count("/bad-return", "500") == 1


@pytest.mark.parametrize("kind", ["exception", "base"])
async def test_a_failure_after_the_answer_began_ends_it_and_counts_as_a_500(
    kind: str, lines: Lines
) -> None:
    metrics = Metrics()
    sent = await call(app_failing_with(FAILURES[kind], metrics), "/mid-body")
    status, _, body = answer_of(sent)  # one start only: no second answer
    assert status == 200 and body == b"the start"
    assert not any(e["type"] == "http.response.body" and not e.get("more_body") for e in sent)
    assert len(lines.errors()) == 1
    assert metrics.count("/mid-body", "500") == 1


async def test_cancellation_goes_on_untouched(lines: Lines) -> None:
    metrics = Metrics()
    app = QuartTrio("guarded")
    started = trio.Event()

    @app.get("/slow")
    async def slow() -> Response:
        started.set()
        await trio.sleep_forever()
        raise AssertionError

    guard(app, requests=metrics.requests, seconds=metrics.seconds)
    sent: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        async def request() -> None:
            sent.extend(await call(app, "/slow"))
        nursery.start_soon(request)
        await started.wait()
        nursery.cancel_scope.cancel()
    assert sent == [] and lines.errors() == []


async def test_every_answer_carries_its_request_id() -> None:
    app = app_failing_with(Odd(), Metrics())
    _, headers, _ = answer_of(await call(app, "/after-hook", [(b"X-Request-Id", b"abc")]))
    assert headers[b"x-request-id"] == b"abc"
    _, headers, _ = answer_of(await call(app, "/nowhere", [(b"x-request-id", b"bad id!")]))
    assert len(headers[b"x-request-id"]) == 16  # not a plain short id: a new one


@given(st.one_of(st.none(), st.binary(max_size=80),
                 st.text("ab-_.9Z", max_size=70).map(str.encode)))
def test_a_request_id_is_the_one_given_only_if_short_and_plain(given: bytes | None) -> None:
    named = request_id(given)
    plain = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    if given is not None and 1 <= len(given) <= 64 and set(given) <= plain:
        assert named == given.decode()
    else:
        assert len(named) == 16 and set(named) <= set("0123456789abcdef")
    assert named.isascii()


# --- live: a real route of a real api process -------------------------------------------

@pytest.mark.parametrize("kind", ["exception", "group", "asyncio-cancelled", "base-group"])
async def test_a_route_that_fails_answers_500_and_the_next_request_is_served(
    api: Running, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
    lines: Lines, kind: str
) -> None:
    user = await register(client)
    before = await metric(f"{api.url}/metrics", "outpost_http_requests_total",
                          route="/v1/me", status="500")

    transact = api.services.pg.transact

    async def fails(work: Any, *args: Any, **kwargs: Any) -> Any:
        if work is read_me:  # this route's unit of work only (the relay's must go on)
            raise FAILURES[kind]
        return await transact(work, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(api.services.pg, "transact", fails)
        response = await client.get("/v1/me", headers={**bearer(user["token"]),
                                                       "X-Request-Id": f"live-{kind}"})
    assert_error(response, 500, "internal")
    assert response.headers["x-request-id"] == f"live-{kind}"
    errors = lines.errors()
    assert len(errors) == 1, errors
    assert errors[0]["request"] == f"live-{kind}" and "Traceback" in errors[0]["error"]
    assert await metric(f"{api.url}/metrics", "outpost_http_requests_total",
                        route="/v1/me", status="500") == before + 1
    # The same connection, the same route: served.
    again = await client.get("/v1/me", headers=bearer(user["token"]))
    assert again.status_code == 200, again.text


async def test_every_json_answer_ends_with_a_newline(client: httpx.AsyncClient) -> None:
    """So that `curl` leaves the shell's prompt on a line of its own (a JSON parser takes
    the newline as whitespace): a route's answer, a cached list, the framework's 404, a
    domain error, and a refusal of the edge's own (an upgrade's path without one)."""
    user = await register(client)
    auth = bearer(user["token"])
    answers = [await client.get("/healthz"), await client.get("/v1/characters", headers=auth),
               await client.get("/v1/characters", headers=auth), await client.get("/nothing"),
               await client.get("/v1/me"), await client.get("/v1/world/ws")]
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 401, 400]
    for answer in answers:
        assert answer.content.endswith(b"}\n"), answer.content
        orjson.loads(answer.content)
