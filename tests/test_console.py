"""The operator console's routes (docs/protocol.md, "Operator console"; console/).

Covers: every /v1/admin/ route refuses a request without a token (401) and a player's
token (403), each in the error shape, before it reads anything else; `outpost operator
grant` makes an operator (and names an account that does not exist); an operator sees
the zones (owner, players, tick times, snapshots a second) and the players of a zone
run by another process, kicks one (its socket closes with 4010 and its position is
saved); rescues a character stranded in a zone that no longer runs (its owner's join
then works); disables an account (its open socket closes with 4011, its token stops
working at once, its login is refused, its sessions end; enabled, it logs in again and
its old tokens stay refused), also when NATS does
not carry the word (Postgres is read every REFRESH_S); every action is logged with the
operator's id.

Rules: real processes in-process (an api, and a zone process of its own for the remote
paths) against the session's services; players over real WebSockets; the CLI as a
subprocess.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from bus import subjects
from characters.store import move_to_zone
from console.access import REFRESH_S
from persistence.users import set_disabled, set_operator
from server.config import Settings
from server.process import Roles, Running
from tests.helpers import (
    assert_error,
    bearer,
    eventually,
    metric,
    register,
    running_process,
    use_api_loop,
)
from tests.processes import process_env
from tests.world import close_code, connect, joined, new_player, next_of, saved_at, send, ws_url
from zones import contract

ROUTES = {("GET", "/v1/admin/zones"), ("GET", "/v1/admin/zones/{zone_id}/players"),
          ("GET", "/v1/admin/users/{who}"), ("POST", "/v1/admin/users/{who}/disable"),
          ("POST", "/v1/admin/users/{who}/enable"),
          ("POST", "/v1/admin/characters/{character_id}/kick"),
          ("POST", "/v1/admin/characters/{character_id}/move")}


@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    """An api process running zone z1 itself."""
    async with running_process(settings, nursery, Roles(zones=("z1",))) as running:
        yield running


async def operator(running: Running, http: httpx.AsyncClient) -> dict[str, str]:
    """A fresh user, made an operator as `outpost operator grant` does (tested below)."""
    use_api_loop(running)
    user = await register(http)
    await running.services.pg.transact(set_operator, user["username"], True)
    return user


async def test_every_console_route_refuses_anyone_but_an_operator(
    api: Running, client: httpx.AsyncClient
) -> None:
    document = (await client.get("/openapi.json")).json()
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if path.startswith("/v1/admin/")}
    assert documented == ROUTES  # all of them are tried below
    player = await new_player(client)
    for method, path in sorted(ROUTES):
        url = path.format(zone_id="z1", who=player["user_id"],
                          character_id=player["character"]["id"])
        body = {"zone": "z1"} if url.endswith("/move") else None
        assert_error(await client.request(method, url, json=body), 401, "unauthenticated")
        refused = await client.request(method, url, headers=bearer(player["token"]), json=body)
        assert_error(refused, 403, "forbidden")


async def test_outpost_operator_grant_makes_an_operator(
    api: Running, client: httpx.AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    assert_error(await client.get("/v1/admin/zones", headers=bearer(user["token"])), 403,
                 "forbidden")

    async def outpost_operator(*args: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [sys.executable, "-m", "server.cli", "operator", *args], env=process_env(settings),
            capture_stdout=True, capture_stderr=True, check=False)

    granted = await outpost_operator("grant", user["username"].upper())  # any case
    assert granted.returncode == 0, granted.stderr.decode()
    assert "is now an operator" in granted.stdout.decode()
    assert (await client.get("/v1/admin/zones", headers=bearer(user["token"]))).status_code \
        == 200
    revoked = await outpost_operator("revoke", user["username"])
    assert revoked.returncode == 0, revoked.stderr.decode()
    assert_error(await client.get("/v1/admin/zones", headers=bearer(user["token"])), 403,
                 "forbidden")  # at once: the role is read at every request
    unknown = await outpost_operator("grant", "nobody_" + uuid.uuid4().hex[:8])
    assert unknown.returncode == 1 and "no account is named" in unknown.stderr.decode()


async def test_an_operator_sees_a_remote_zone_and_kicks_a_player_from_it(
    settings: Settings, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="console")
    async with (running_process(settings, nursery, Roles(http=False, zones=("z1",))),
                running_process(settings, nursery, Roles()) as api,
                httpx.AsyncClient(base_url=api.url, timeout=10) as http):
        boss = await operator(api, http)
        player = await new_player(http, "Kickable")
        character_id = player["character"]["id"]
        async with connect(ws_url(api.url, player["token"])) as conn:
            await joined(conn, character_id)
            await send(conn, {"type": "move", "dx": 3, "dy": 4, "seq": 1})
            await next_of(conn, "snapshot")

            async def listed() -> dict[str, Any] | None:
                zones = (await http.get("/v1/admin/zones", headers=bearer(boss["token"])))
                z1 = {z["zone"]: z for z in zones.json()["zones"]}["z1"]
                return z1 if z1["players"] == 1 and z1["snapshots_per_s"] else None

            z1 = await eventually(listed, "z1 listed with its player and rate", tries=150)
            assert isinstance(z1, dict)
            assert z1["up"] and z1["owner"] != api.services.world.instance_id, z1
            assert 5 < z1["snapshots_per_s"] <= 1.5 * settings.world_tick_rate_hz, z1
            assert z1["tick_ms"]["p99"] is not None, z1
            roster = await http.get("/v1/admin/zones/z1/players", headers=bearer(boss["token"]))
            assert roster.status_code == 200, roster.text
            [seen] = roster.json()["players"]
            assert roster.json()["total"] == 1
            assert (seen["character_id"], seen["user_id"], seen["name"]) == \
                (character_id, player["user_id"], "Kickable")
            assert seen["fields"]["hp"] == 100, seen  # the shooter's replicated field
            kicked = await http.post(f"/v1/admin/characters/{character_id}/kick",
                                     headers=bearer(boss["token"]))
            assert kicked.status_code == 200 and kicked.json() == {"kicked": character_id}
            assert await close_code(conn) == 4010
        await saved_at(api, character_id, 3.0, 4.0)
        down = await http.get("/v1/admin/zones/z7/players", headers=bearer(boss["token"]))
        assert_error(down, 404, "not_found")
        unknown = await http.post(f"/v1/admin/characters/{uuid.uuid4()}/kick",
                                  headers=bearer(boss["token"]))
        assert_error(unknown, 404, "not_found")
    assert f"operator {boss['user_id']} kicked character {character_id}" in caplog.text


async def test_a_stranded_character_is_moved_to_a_running_zone(
    world: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="console")
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        boss = await operator(world, http)
        player = await new_player(http, "Stranded")
        character_id = player["character"]["id"]
        await world.services.pg.transact(move_to_zone, uuid.UUID(character_id), "z9", 7, 7)
        async with connect(ws_url(world.url, player["token"])) as conn:
            await send(conn, {"type": "join", "character_id": character_id})
            assert (await next_of(conn, "error"))["code"] == "zone_unavailable"
            account = await http.get(f"/v1/admin/users/{player['username']}",
                                     headers=bearer(boss["token"]))
            assert account.status_code == 200, account.text
            [stranded] = account.json()["characters"]
            assert account.json()["progression"] is None  # no provisioner runs here
            assert (stranded["zone_id"], stranded["zone_up"]) == ("z9", False)
            url = f"/v1/admin/characters/{character_id}/move"
            assert_error(await http.post(url, json={"zone": "z9"}, headers=bearer(boss["token"])),
                         409, "conflict", {"zone": "not running"})
            assert_error(await http.post(url, json={}, headers=bearer(boss["token"])), 400,
                         "validation_failed", {"zone": "required"})
            moved = await http.post(url, json={"zone": "z1"}, headers=bearer(boss["token"]))
            assert moved.status_code == 200, moved.text
            assert (moved.json()["zone_id"], moved.json()["x"], moved.json()["y"]) == \
                ("z1", 0, 0)
            welcome = await joined(conn, character_id)  # its owner joins it, same socket
            assert welcome["zone"] == "z1"
    assert f"operator {boss['user_id']} moved character {character_id} from z9 to z1" \
        in caplog.text


async def test_a_disabled_account_is_closed_out_at_once(world: Running) -> None:
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        boss = await operator(world, http)
        player = await new_player(http)
        login = {"username": player["username"], "password": player["password"]}
        async with connect(ws_url(world.url, player["token"])) as conn:
            await joined(conn, player["character"]["id"])
            disabled = await http.post(f"/v1/admin/users/{player['user_id']}/disable",
                                       headers=bearer(boss["token"]))
            assert disabled.status_code == 200 and disabled.json()["disabled"], disabled.text
            with trio.fail_after(2):  # at once, not at the next refresh
                assert await close_code(conn) == 4011
        assert_error(await http.get("/v1/me", headers=bearer(player["token"])), 401,
                     "unauthenticated")
        assert_error(await http.post("/v1/auth/login", json=login), 403, "forbidden")
        own = await http.post(f"/v1/admin/users/{boss['username']}/disable",
                              headers=bearer(boss["token"]))
        assert_error(own, 400, "validation_failed", {"user": "yours"})
        enabled = await http.post(f"/v1/admin/users/{player['username']}@example.com/enable",
                                  headers=bearer(boss["token"]))
        assert enabled.status_code == 200 and not enabled.json()["disabled"], enabled.text
        # Its sessions ended with the disable: its old tokens stay refused.
        assert_error(await http.get("/v1/me", headers=bearer(player["token"])), 401,
                     "unauthenticated")
        assert_error(await http.post("/v1/auth/refresh",
                                     json={"refresh_token": player["refresh_token"]}),
                     401, "unauthenticated")
        again = await http.post("/v1/auth/login", json=login)
        assert again.status_code == 200, again.text
        assert (await http.get("/v1/me", headers=bearer(again.json()["token"]))).status_code == 200


async def test_an_account_disabled_without_a_word_on_nats_is_closed_out_within_the_refresh(
    world: Running
) -> None:
    """A process that did not hear the console (NATS away, or another process's word
    lost) reads the disabled accounts from Postgres every REFRESH_S."""
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        player = await new_player(http)
        use_api_loop(world)
        async with connect(ws_url(world.url, player["token"])) as conn:
            await joined(conn, player["character"]["id"])
            await world.services.pg.transact(set_disabled, uuid.UUID(player["user_id"]), True)
            with trio.fail_after(REFRESH_S + 3):
                assert await close_code(conn) == 4011
        assert_error(await http.get("/v1/me", headers=bearer(player["token"])), 401,
                     "unauthenticated")


async def test_an_account_disabled_through_another_api_process_is_closed_out_at_once(
    world: Running, settings: Settings, nursery: trio.Nursery
) -> None:
    """The word goes over NATS (admin.account/1) to the process that holds the socket."""
    async with (running_process(settings, nursery, Roles()) as other,
                httpx.AsyncClient(base_url=other.url, timeout=10) as elsewhere,
                httpx.AsyncClient(base_url=world.url, timeout=10) as http):
        boss = await operator(other, elsewhere)
        player = await new_player(http)
        async with connect(ws_url(world.url, player["token"])) as conn:
            await joined(conn, player["character"]["id"])
            disabled = await elsewhere.post(f"/v1/admin/users/{player['user_id']}/disable",
                                            headers=bearer(boss["token"]))
            assert disabled.status_code == 200, disabled.text
            with trio.fail_after(2):
                assert await close_code(conn) == 4011
        assert_error(await http.get("/v1/me", headers=bearer(player["token"])), 401,
                     "unauthenticated")


async def test_a_word_to_sessions_naming_no_user_is_refused_and_counted(world: Running) -> None:
    said = contract.encode(contract.Kick("not a user id", str(uuid.uuid4()), "why"))
    use_api_loop(world)
    await world.services.bus.publish_many(subjects.ADMIN_SESSIONS, [said])

    async def counted() -> bool:
        return await metric(f"{world.url}/metrics", "outpost_peer_messages_refused_total",
                            message="admin", reason="invalid") == 1

    await eventually(counted, "the word refused and counted")


async def test_a_username_of_hex_digits_is_never_taken_for_another_users_id(
    world: Running
) -> None:
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
        boss = await operator(world, http)
        victim = await register(http)
        mimic = await register(http, uuid.UUID(victim["user_id"]).hex)  # 32 hex digits
        for who, user in ((mimic["username"], mimic), (victim["user_id"], victim),
                          (mimic["username"].upper(), mimic)):
            found = await http.get(f"/v1/admin/users/{who}", headers=bearer(boss["token"]))
            assert found.json()["user_id"] == user["user_id"], (who, found.text)
