"""Postgres going away under a running server (docs/protocol.md, "Errors": 503 `unavailable`,
"the request changed nothing").

Covers: writes and uncached reads answer 503 while Postgres is down, /readyz says which
check failed while /healthz stays up, the connection pool recovers by itself once
Postgres is back (no api restart), and a registration refused during the outage left
no trace.

Rules: the real Postgres of the session is stopped and always restarted in `finally`;
recovery is polled in a bounded loop (about 10 s), never awaited by a fixed sleep.
"""

from __future__ import annotations

import httpx
import pytest
import trio

from server.devstack import DevStack
from tests.helpers import bearer, register, unique_name


async def test_postgres_outage_answers_503_and_recovers(
    stack: DevStack, client: httpx.AsyncClient
) -> None:
    user = await register(client)  # a valid token whose list was never cached
    lost = {"username": unique_name("lost"), "password": "correct horse"}
    lost_registration = {**lost, "email": f"{lost['username']}@example.com"}

    stack.postgres.stop()
    try:
        with trio.fail_after(15):
            refused = await client.post("/v1/auth/register", json=lost_registration)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable"

            listed = await client.get("/v1/characters", headers=bearer(user["token"]))
            assert listed.status_code == 503, listed.text
            assert listed.json()["error"]["code"] == "unavailable"

            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["postgres"] is False
            assert ready.json()["checks"]["redis"] is True

            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
    finally:
        stack.postgres.start()

    # The same api, no restart: at most a request or two meet a dead pooled connection.
    for _ in range(100):
        recovered = await client.get("/v1/characters", headers=bearer(user["token"]))
        if recovered.status_code == 200:
            break
        assert recovered.status_code == 503, recovered.text
        await trio.sleep(0.1)
    else:
        pytest.fail("Postgres came back but requests still fail after 10 s")
    assert recovered.json() == {"characters": []}
    assert (await client.get("/readyz")).status_code == 200

    # The refused registration changed nothing: the account does not exist...
    login = await client.post("/v1/auth/login", json=lost)
    assert login.status_code == 401, login.text
    assert login.json()["error"]["code"] == "invalid_credentials"
    # ...and its username and email are still free.
    again = await client.post("/v1/auth/register", json=lost_registration)
    assert again.status_code == 201, again.text
    login = await client.post("/v1/auth/login", json=lost)
    assert login.status_code == 200, login.text
    assert login.json()["user_id"] == again.json()["user_id"]
