"""Test rules: every test talks to real services (Postgres, Redis, NATS with
JetStream) that this session starts itself from the same wheels `make dev`
uses, on free loopback ports; the API runs in-process on a free port and is
reached over real HTTP. Users are unique per test (random names), so tests
share one database without seeing each other's rows. Fault tests stop and
restart the session's servers and always restart them in `finally`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from server.config import Settings, load_settings
from server.devstack import DevStack
from server.process import Roles, Running
from server.ws import wire
from tests.helpers import Lines, running_process

# Cheap hashing keeps the suite fast; production cost is argon2-cffi's default. Every test
# registers its users and connects from 127.0.0.1: registration limits and the cap on
# connections per address out of the way (the tests of the limits set their own).
TEST_ENV = {
    "JWT_SECRET": "test-secret-that-is-long-enough-for-hs256",
    "HTTP_PORT": "0",
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_KIB": "1024",
    "OUTBOX_POLL_MS": "100",
    "REGISTER_RATE_PER_ADDRESS": "1000000",
    "REGISTER_RATE_TOTAL": "1000000",
    "MAX_CONNECTIONS_PER_ADDRESS": "0",
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(Path(tmp_path_factory.mktemp("services")), durable=False) as running:
        yield running


@pytest.fixture(autouse=True)
def services_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that stops or pauses one of the session's servers must start it again: one
    it left down fails that test (here) and is started, so the next tests do not fail."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack: DevStack = request.getfixturevalue("stack")
    down = [server.name for server in stack.servers if not server.healthy]
    for server in stack.servers:
        server.heal()
    assert not down, f"the test left {', '.join(down)} down"


@pytest.fixture
def settings(stack: DevStack) -> Settings:
    return load_settings(TEST_ENV, **stack.urls())


@pytest.fixture
async def api(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    """An `outpost api` process, in-process: HTTP only, no provisioning consumers."""
    async with running_process(settings, nursery, Roles()) as running:
        yield running


@pytest.fixture
async def client(api: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        yield http


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(params=["native", "python"])
def wire_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The world's sockets through the C wire module, then through its pure-Python twin
    (server/ws/wire.py): a module that uses this runs each of its tests on both paths."""
    if request.param == "native":
        if wire.NATIVE is None:
            pytest.skip("the C wire module was not built (installed with OUTPOST_COMPILE=0?)")
        monkeypatch.setattr(wire, "IMPL", wire.NATIVE)
    else:
        monkeypatch.setattr(wire, "IMPL", wire.PYTHON)
    return str(request.param)
