"""Sessions that can end (docs/protocol.md, "Auth"; auth/sessions.py, console/access.py).

Covers: register and login answer a refresh token; a refresh rotates it (the old one is
used up); a refresh token used twice ends its whole session (the newest refresh token
and the access tokens too); two refreshes racing with one token never both succeed; a
logout (by access token, or by refresh token alone) ends the session: its tokens are
refused and its open world socket closes with 4012 at once, in this api process and in
another one (over NATS), and within REFRESH_S when no word comes (Postgres is re-read);
another session of the same user goes on; JWT signing keys rotate (a token of the old
key works while the old key is listed, 401 once it is not); a short key, or a JWT_TTL
over its bound, stops `outpost api` at start in one line naming the variable; a login
rehashes a password hashed with other Argon2 parameters than the configured ones.

Rules: real processes in-process against the session's services, real HTTP and
WebSockets; `outpost api` as a subprocess for the start-up refusals; bounded waits only.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from auth.sessions import end_session, refresh_token_of
from console.access import REFRESH_S
from persistence.errors import ValidationFailed
from persistence.users import find_by_login
from server.config import Settings
from server.process import Roles, Running
from tests.helpers import assert_error, bearer, register, running_process, use_api_loop
from tests.world import (
    close_code,
    connect,
    joined,
    new_player,
    next_of,
    send,
    still_open,
    ws_url,
)

NEW_KEY = "a-new-signing-key-that-is-long-enough-for-hs256"


@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    """An api process running zone z1 itself."""
    async with running_process(settings, nursery, Roles(zones=("z1",))) as running:
        yield running


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/v1/auth/refresh", json={"refresh_token": token})


async def login(http: httpx.AsyncClient, user: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post("/v1/auth/login", json={"username": user["username"],
                                                    "password": user["password"]})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_register_and_login_answer_a_refresh_token(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    logged_in = await login(client, user)
    for body in (user, logged_in):
        assert body["expires_in"] == settings.jwt_ttl_s == 900
        assert len(body["refresh_token"]) >= 43  # 256 bits, base64url
    assert logged_in["refresh_token"] != user["refresh_token"]


async def test_a_refresh_rotates_and_a_reuse_ends_the_session(client: httpx.AsyncClient) -> None:
    user = await register(client)
    first = await refresh(client, user["refresh_token"])
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["user_id"] == user["user_id"]
    assert rotated["refresh_token"] != user["refresh_token"]
    assert (await client.get("/v1/me", headers=bearer(rotated["token"]))).status_code == 200
    # The used-up token again: a copy is at work; the session ends for everyone.
    assert_error(await refresh(client, user["refresh_token"]), 401, "unauthenticated")
    assert_error(await refresh(client, rotated["refresh_token"]), 401, "unauthenticated")
    for token in (user["token"], rotated["token"]):
        ended = await client.get("/v1/me", headers=bearer(token))
        assert_error(ended, 401, "unauthenticated")
        assert ended.json()["error"]["message"] == "the session has ended"
    # Another session of the same user goes on.
    other = await login(client, user)
    assert (await client.get("/v1/me", headers=bearer(other["token"]))).status_code == 200
    assert (await refresh(client, other["refresh_token"])).status_code == 200


@pytest.mark.parametrize("body", [{}, {"refresh_token": 5}, {"refresh_token": "x" * 200},
                                  {"refresh_token": "not one of ours"}])
async def test_a_bad_refresh_is_refused(client: httpx.AsyncClient,
                                        body: dict[str, object]) -> None:
    answer = await client.post("/v1/auth/refresh", json=body)
    if isinstance(body.get("refresh_token"), str):
        assert_error(answer, 401, "unauthenticated")
    else:
        assert_error(answer, 400, "validation_failed", {"refresh_token"})


async def test_racing_refreshes_with_one_token_never_both_succeed(
    client: httpx.AsyncClient
) -> None:
    async def one(token: str, answers: list[httpx.Response]) -> None:
        answers.append(await refresh(client, token))

    for _ in range(5):
        user = await register(client)
        answers: list[httpx.Response] = []
        async with trio.open_nursery() as racing:
            racing.start_soon(one, user["refresh_token"], answers)
            racing.start_soon(one, user["refresh_token"], answers)
        assert sorted(a.status_code for a in answers) == [200, 401], [a.text for a in answers]


async def test_a_logout_closes_the_sessions_socket_at_once(world: Running) -> None:
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        player = await new_player(http)
        other = await login(http, player)
        async with (connect(ws_url(world.url, player["token"])) as conn,
                    connect(ws_url(world.url, other["token"])) as stays):
            await joined(conn, player["character"]["id"])
            out = await http.post("/v1/auth/logout", headers=bearer(player["token"]))
            assert out.status_code == 204, out.text
            with trio.fail_after(2):  # at once, not at the next re-read
                assert await close_code(conn) == 4012
            assert (await http.get("/v1/me", headers=bearer(other["token"]))).status_code == 200
            await stays.send_message('{"type": "ping", "t": "1"}')
            assert "pong" in str(await stays.get_message())
        assert_error(await http.get("/v1/me", headers=bearer(player["token"])), 401,
                     "unauthenticated")
        assert_error(await refresh(http, player["refresh_token"]), 401, "unauthenticated")
        # A logout by refresh token alone (the access token may have expired).
        out = await http.post("/v1/auth/logout", json={"refresh_token": other["refresh_token"]})
        assert out.status_code == 204, out.text
        assert_error(await http.get("/v1/me", headers=bearer(other["token"])), 401,
                     "unauthenticated")
        assert_error(await http.post("/v1/auth/logout"), 401, "unauthenticated")
        assert_error(await http.post("/v1/auth/logout", json={"refresh_token": "nope"}), 401,
                     "unauthenticated")


async def test_a_logout_through_another_api_process_closes_the_socket_at_once(
    world: Running, settings: Settings, nursery: trio.Nursery
) -> None:
    """The word goes over NATS (admin.session/1) to the process that holds the socket."""
    async with (running_process(settings, nursery, Roles()) as other,
                httpx.AsyncClient(base_url=other.url, timeout=10) as elsewhere,
                httpx.AsyncClient(base_url=world.url, timeout=10) as http):
        player = await new_player(http)
        async with connect(ws_url(world.url, player["token"])) as conn:
            await joined(conn, player["character"]["id"])
            out = await elsewhere.post("/v1/auth/logout", headers=bearer(player["token"]))
            assert out.status_code == 204, out.text
            with trio.fail_after(2):
                assert await close_code(conn) == 4012
        assert_error(await http.get("/v1/me", headers=bearer(player["token"])), 401,
                     "unauthenticated")


async def test_a_session_ended_without_a_word_closes_within_the_refresh(
    world: Running
) -> None:
    """A process that heard no word (NATS away) reads the ended sessions every REFRESH_S."""
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        player = await new_player(http)
        session = world.services.tokens.verify(player["token"]).session_id
        use_api_loop(world)
        async with connect(ws_url(world.url, player["token"])) as conn:
            await joined(conn, player["character"]["id"])
            await world.services.pg.transact(end_session, session)
            with trio.fail_after(REFRESH_S + 3):
                assert await close_code(conn) == 4012
        assert_error(await http.get("/v1/me", headers=bearer(player["token"])), 401,
                     "unauthenticated")


async def test_signing_keys_rotate_without_logging_anyone_out(
    client: httpx.AsyncClient, settings: Settings, nursery: trio.Nursery
) -> None:
    user = await register(client)  # signed by the test settings' key, "default"
    old = settings.jwt_keys[0]
    rotated = dataclasses.replace(settings, jwt_keys=(("k2", NEW_KEY), old))
    retired = dataclasses.replace(settings, jwt_keys=(("k2", NEW_KEY),))
    async with (running_process(rotated, nursery, Roles()) as both,
                running_process(retired, nursery, Roles()) as new_only,
                httpx.AsyncClient(base_url=both.url, timeout=10) as http,
                httpx.AsyncClient(base_url=new_only.url, timeout=10) as newer):
        assert (await http.get("/v1/me", headers=bearer(user["token"]))).status_code == 200
        fresh = await refresh(http, user["refresh_token"])  # signed by k2 now
        assert fresh.status_code == 200, fresh.text
        assert_error(await newer.get("/v1/me", headers=bearer(user["token"])), 401,
                     "unauthenticated")
        assert (await newer.get("/v1/me", headers=bearer(fresh.json()["token"]))
                ).status_code == 200
        assert_error(await client.get("/v1/me", headers=bearer(fresh.json()["token"])), 401,
                     "unauthenticated")  # a process that does not list k2


@pytest.mark.parametrize(("variable", "value"), [("JWT_SECRET", "s3cret"),
                                                 ("JWT_TTL", "86401")])
def test_outpost_api_refuses_a_short_key_or_a_long_ttl_naming_it(
    variable: str, value: str
) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("JWT_")},
           "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none",
           "REDIS_URL": "redis://127.0.0.1:9/0", "NATS_URL": "nats://127.0.0.1:9",
           "JWT_SECRET": "a-secret-that-is-long-enough-for-hs256", variable: value}
    finished = subprocess.run([sys.executable, "-m", "server.cli", "api"], env=env,
                              check=False, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2, finished.stderr
    lines = finished.stderr.splitlines()
    assert len(lines) == 1 and variable in lines[0], finished.stderr
    assert value not in lines[0] or variable == "JWT_TTL"  # a secret is never repeated


async def test_a_login_rehashes_a_password_hashed_at_another_cost(
    client: httpx.AsyncClient, settings: Settings, nursery: trio.Nursery
) -> None:
    user = await register(client)  # at the test settings' cost, 1
    costlier = dataclasses.replace(settings, argon2_time_cost=2)
    async with (running_process(costlier, nursery, Roles()) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        use_api_loop(running)
        before = await running.services.pg.transact(find_by_login, user["username"])
        assert before is not None and ",t=1," in before.password_hash
        await login(http, user)
        after = await running.services.pg.transact(find_by_login, user["username"])
        assert after is not None and ",t=2," in after.password_hash
        await login(http, user)  # the new hash verifies
        again = await running.services.pg.transact(find_by_login, user["username"])
        assert again is not None and again.password_hash == after.password_hash


@given(st.dictionaries(st.text(max_size=20), st.none() | st.integers() | st.text()
                       | st.lists(st.integers(), max_size=3), max_size=5))
def test_refresh_token_of_any_body_is_a_string_or_a_validation_error(
    body: dict[str, object]
) -> None:
    try:
        found = refresh_token_of(body)
    except ValidationFailed as exc:
        assert set(exc.fields) == {"refresh_token"}
    else:
        assert found == body["refresh_token"] and isinstance(found, str)


async def test_a_renewed_token_keeps_the_socket_open_past_the_old_ones_expiry(
    settings: Settings, nursery: trio.Nursery
) -> None:
    """docs/protocol.md, "Outpost, renewing the token": with short tokens, a socket handed
    its session's refreshed token outlives the one it opened with (before, it closed
    with 4001 every JWT_TTL, and the page reconnected), and only that session's token
    will do."""
    short = dataclasses.replace(settings, jwt_ttl_s=3)
    async with (running_process(short, nursery, Roles(zones=("z1",))) as world,
                httpx.AsyncClient(base_url=world.url, timeout=10) as http):
        player = await new_player(http)
        stranger = await register(http)
        expires = jwt.decode(player["token"], options={"verify_signature": False})["exp"]
        async with connect(ws_url(world.url, player["token"])) as conn:
            await joined(conn, player["character"]["id"])
            for token, code in ((stranger["token"], "forbidden"), ("x.y.z", "unauthenticated"),
                                (None, "validation_failed")):
                await send(conn, {"type": "renew", "token": token})
                assert (await next_of(conn, "error"))["code"] == code
            await trio.sleep(1.5)  # so that the refreshed token expires a second later
            fresh = (await refresh(http, player["refresh_token"])).json()
            await send(conn, {"type": "renew", "token": fresh["token"]})
            await trio.sleep(max(0.0, expires + 0.5 - time.time()))  # past the old expiry
            await still_open(conn)
            with trio.fail_after(short.jwt_ttl_s + 2):
                assert await close_code(conn) == 4001  # the renewed one expires in turn
