"""Helpers the test modules share: HTTP calls as a client makes them, the docs/protocol.md
error check, bounded polling, and raw HTTP/1.1 over a socket for what httpx cannot send."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import httpx
import orjson
import pytest
import trio
import trio_asyncio
from prometheus_client.parser import text_string_to_metric_families

from server.config import Settings
from server.logs import JsonLines
from server.process import Roles, Running, run_process

STOP_TIMEOUT_S = 15

# A /metrics page: (sample name, its labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: httpx.AsyncClient, username: str | None = None,
                   password: str = "correct horse") -> dict[str, str]:
    """Register a fresh user; returns the 201 body plus the username and password used."""
    username = username or unique_name()
    response = await client.post("/v1/auth/register", json={
        "username": username, "email": f"{username}@example.com", "password": password})
    assert response.status_code == 201, response.text
    return {**response.json(), "username": username, "password": password}


def assert_error(
    response: httpx.Response, status: int, code: str,
    fields: set[str] | dict[str, str] | None = None,
) -> dict[str, Any]:
    """Check a docs/protocol.md error response exactly; return its "error" object.

    `fields` given as a set: the error must carry exactly those field names, each with a
    reason; as a dict: exactly those fields with exactly those reasons. Not given: the
    error must have no `fields`. A 409 names the field in conflict and why
    (docs/protocol.md), so a caller checking one must say which (a dict).
    """
    assert status != 409 or isinstance(fields, dict), \
        "a 409 names its field and why: state them, e.g. {'username': 'taken'}"
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert {"code", "message"} <= set(error) <= {"code", "message", "fields"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip()
    if fields is None:
        assert "fields" not in error, error
    elif isinstance(fields, dict):
        assert error.get("fields") == fields, error
    else:
        assert isinstance(error.get("fields"), dict), error
        assert set(error["fields"]) == fields, error
        assert all(isinstance(why, str) and why for why in error["fields"].values()), error
    return error


@asynccontextmanager
async def running_game(settings: Settings, nursery: trio.Nursery, rules: str,
                       **changes: Any) -> AsyncIterator[Running]:
    """An in-process api with its zone z1 running the game `rules` (WORLD_RULES), other
    settings changed as `changes` say; its loop is the test's."""
    game = dataclasses.replace(settings, world_rules=rules, **changes)
    async with running_process(game, nursery, Roles(zones=("z1",))) as running:
        use_api_loop(running)
        yield running


@asynccontextmanager
async def running_process(settings: Settings, nursery: trio.Nursery,
                          roles: Roles) -> AsyncIterator[Running]:
    """An Outpost process with `roles`, in-process in `nursery`; on exit, shut down as
    SIGTERM would (gracefully: zones save their players) and wait until it is done."""
    shutdown, stopped = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[Running]) -> None:
        try:
            await run_process(settings, roles=roles, shutdown=shutdown, task_status=task_status)
        finally:
            stopped.set()

    running = await nursery.start(run)
    try:
        await _hosting(running, roles.zones, settings.zone_lease_s)
        yield running
    finally:
        shutdown.set()
        with trio.move_on_after(STOP_TIMEOUT_S):
            await stopped.wait()
        if not stopped.is_set():  # a shutdown that hangs is a bug, not a slow test
            pytest.fail(f"the process did not stop within {STOP_TIMEOUT_S} s")


async def _hosting(running: Running, zones: tuple[str, ...], lease_s: float) -> None:
    """Wait until this process runs `zones` itself. The session's NATS is shared, so an
    earlier test's process that did not give a lease back (killed, or too slow to stop)
    holds it until it expires: until then this process stands by, and its joins would
    go to a holder that is gone."""

    async def hosted() -> bool:
        return all(zone in running.services.world.zones for zone in zones)

    await eventually(hosted, f"this process to hold the lease of {', '.join(zones)}",
                     tries=int(20 * lease_s) + 20)


@asynccontextmanager
async def api_client(
    settings: Settings, nursery: trio.Nursery, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A dedicated in-process API with `overrides` applied to its settings, and a client."""
    async with (running_process(dataclasses.replace(settings, **overrides), nursery,
                                Roles()) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        yield http


@asynccontextmanager
async def from_address(client: httpx.AsyncClient,
                       address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `client`'s server whose connections come from `address`: any address of
    127.0.0.0/8 is this machine, so a test can be several clients the server tells apart."""
    async with httpx.AsyncClient(base_url=client.base_url, timeout=10,
                                 transport=httpx.AsyncHTTPTransport(local_address=address)
                                 ) as http:
        yield http


def use_api_loop(api: Running) -> None:
    """Let this test task call the api's actors: they cross to asyncio through the
    trio-asyncio loop `run_process` opened, which only its own task tree sees."""
    trio_asyncio.current_loop.set(api.services.pg._pool._loop)  # type: ignore[union-attr]


async def within(check: Callable[[], Awaitable[object]], *, tries: int = 100) -> object:
    """Poll `check` every 0.1 s until it returns something truthy, and return that; None
    after `tries`."""
    for _ in range(tries):
        result = await check()
        if result:
            return result
        await trio.sleep(0.1)
    return None


async def eventually(check: Callable[[], Awaitable[object]], what: str, *,
                     tries: int = 100) -> object:
    """`within`, failing the test after `tries`."""
    result = await within(check, tries=tries)
    if not result:
        pytest.fail(f"gave up after {tries / 10:.0f} s waiting for {what}")
    return result


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    """GET /metrics at `url`, parsed by prometheus-client's own parser."""
    response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def at(samples: Samples, name: str, **labels: str) -> float:
    """The one sample `name` with exactly `labels`; fails if there is none."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} is not in /metrics"
    return samples[key]


async def metric(url: str, name: str, **labels: str) -> float:
    """`total` of `name` on the /metrics page at `url`, fetched now."""
    async with httpx.AsyncClient() as http:
        return total(await scrape(http, url), name, **labels)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (0 if none)."""
    wanted = labels.items()
    return sum(value for (found, those), value in samples.items()
               if found == name and wanted <= those)


async def read_response(stream: trio.SocketStream, reader: h11.Connection) -> httpx.Response:
    """Read one HTTP response from `stream` (the request already sent through `reader`)."""
    status, headers, content = 0, [], b""
    while True:
        event = reader.next_event()
        if event is h11.NEED_DATA:
            reader.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            content += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    return httpx.Response(status, headers=headers, content=content)


class Lines(logging.Handler):
    """Log lines as the api writes them (JsonLines, formatted as they are emitted, so the
    request id and the client are those of the task that logged): the `lines` fixture."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonLines("api"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))

    def errors(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["level"] == "ERROR"]
