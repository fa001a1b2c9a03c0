"""Log lines (docs/operations.md, "Logs"): outside `outpost dev` they are JSON, one event a
line, naming the process role, the zone, the request or the session; and no line
holds a password or a token, wherever the client put it."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from server.config import Settings
from server.logs import REDACTED, REQUEST, JsonLines, Text, redact
from tests.helpers import bearer, register
from tests.processes import process_env, started
from tests.world import connect, joined, send, snapshot_with, ws_url


def lines_of(log: Path) -> list[dict[str, Any]]:
    """Every log line of a process's output, parsed (the banner on stdout is not one)."""
    parsed = []
    for line in log.read_text().splitlines():
        if line.startswith("outpost: "):
            continue
        entry = orjson.loads(line)  # each line must be JSON
        assert isinstance(entry, dict), line
        assert {"time", "level", "role", "logger", "message"} <= set(entry), entry
        parsed.append(entry)
    return parsed


async def test_json_lines_carry_their_ids_and_no_secret(
    settings: Settings, tmp_path: Path
) -> None:
    zone = f"l{uuid.uuid4().hex[:6]}"
    env = process_env(settings, WORLD_ZONE_ID=zone)
    password = f"pw-{uuid.uuid4().hex}"
    async with started(tmp_path, "zone", zone, env=env) as zone_process:
        async with (started(tmp_path, "api", env=env) as api,
                    httpx.AsyncClient(base_url=api.url, timeout=10) as http):
            user = await register(http, password=password)
            token = user["token"]
            wrong = await http.post("/v1/auth/login", json={
                "username": user["username"], "password": password + "x"})
            assert wrong.status_code == 401
            created = await http.post("/v1/characters", json={"name": "Logger"},
                                      headers={**bearer(token), "X-Request-Id": "my-request-1"})
            assert created.status_code == 201
            assert created.headers["X-Request-Id"] == "my-request-1"
            # A token where none belongs: in the query string of an HTTP route.
            listed = await http.get(f"/v1/characters?token={token}", headers=bearer(token))
            assert listed.status_code == 200
            character_id = created.json()["id"]
            async with connect(ws_url(api.url, token)) as conn:  # the token in the query
                await joined(conn, character_id)
                await send(conn, {"type": "move", "dx": 1, "dy": 0, "seq": 1})
                await snapshot_with(conn, character_id, lambda me: me["seq"] == 1)
                await conn.aclose()
        assert await api.process.wait() == 0
    api_lines, zone_lines = lines_of(api.log), lines_of(zone_process.log)

    assert {e["role"] for e in api_lines} == {"api"}
    assert {e["role"] for e in zone_lines} == {f"zone-{zone}"}
    requests = [e for e in api_lines if e["logger"] == "server.http.guard"]
    for method_path in ("POST /v1/auth/register 201", "POST /v1/auth/login 401",
                        "POST /v1/characters 201", "GET /v1/characters 200"):
        found = [e for e in requests if e["message"].startswith(method_path)]
        assert found and all(len(e["request"]) > 0 for e in found), method_path
    assert any(e.get("request") == "my-request-1" for e in requests)
    assert len({e["request"] for e in requests}) == len(requests)  # one id per request
    sessions = [e for e in api_lines if e["logger"] == "server.ws.session"]
    assert [e["message"].split(" ")[0] for e in sessions] == ["world", "joined", "world"]
    assert len({e["session"] for e in sessions}) == 1
    assert sessions[1]["zone"] == zone
    assert "closed with 1000" in sessions[2]["message"]
    running = [e for e in zone_lines if "running it" in e["message"]]
    assert running and running[0]["zone"] == zone

    everything = api.log.read_text() + zone_process.log.read_text()
    signature = token.rsplit(".", 1)[1]
    for secret in (password, token, signature):
        assert secret not in everything


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("outpost.test", logging.WARNING, __file__, 1, message, args, None)


@pytest.mark.parametrize("leak", [
    "Authorization: Bearer {token}",
    "GET /v1/world/ws?token={token}&v=2",
    "body {{'username': 'a', 'password': '{password}'}}",
    'body b\'{{"username": "a", "password": "{password}"}}\'',
    "form password={password}&next=/",
    "a token on its own: {token}",
])
@pytest.mark.parametrize("formatter", [JsonLines("api"), Text("api")])
def test_no_secret_survives_a_formatter(leak: str, formatter: logging.Formatter) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    password = "hunter 2 \"quoted\""
    line = formatter.format(record(leak.format(token=token, password=password)))
    assert REDACTED in line
    for secret in (token, "c2lnbmF0dXJl", "hunter"):
        assert secret not in line, line


async def test_a_line_in_a_request_names_it() -> None:
    formatter = JsonLines("api")
    REQUEST.set("r-42")
    entry = orjson.loads(formatter.format(record("during the request")))
    assert entry["request"] == "r-42" and entry["role"] == "api"
    async with trio.open_nursery() as nursery:  # tasks it starts inherit the id
        nursery.start_soon(lambda: _assert_request("r-42"))


async def _assert_request(expected: str) -> None:
    assert orjson.loads(JsonLines("api").format(record("child")))["request"] == expected


@pytest.mark.parametrize("leak", [
    "dead letter: {email}",
    "payload b'{{\"email\": \"{email}\"}}'",
    "DETAIL:  Key (lower(email::text))=({email}) already exists.",
    "DETAIL:  Key (username_key)=({username}) already exists.",
])
@pytest.mark.parametrize("formatter", [JsonLines("api"), Text("api")])
def test_no_email_nor_postgres_key_value_survives_a_formatter(
    leak: str, formatter: logging.Formatter
) -> None:
    """A net under lines that name users by id: what a library puts in an error's text."""
    email, username = "Ada.Lovelace+x@Example.co.uk", "ada_99_secret"
    line = formatter.format(record(leak.format(email=email, username=username)))
    assert REDACTED in line
    assert "Lovelace" not in line and username not in line, line


def test_an_email_in_a_traceback_is_redacted() -> None:
    try:
        raise ValueError("duplicate: ada@example.com")
    except ValueError:
        entry = record("it failed")
        entry.exc_info = sys.exc_info()
    line = orjson.loads(JsonLines("api").format(entry))
    assert "ada@example.com" not in line["error"] and REDACTED in line["error"]


@pytest.mark.parametrize("leak", [
    "DATABASE_URL=postgresql://outpost:{secret}@db.internal:5432/outpost?sslmode=verify-full",
    "REDIS_URL=rediss://outpost:{secret}@cache:6380/0",
    "redis://:{secret}@127.0.0.1:6379/0",
    "NATS_URL=nats://outpost:{secret}@a:4222,tls://outpost:{secret}@b:4222",
    "NATS_URL=nats://{secret}@127.0.0.1:4222",  # NATS reads a lone user part as a token
    "connect failed: tls://{secret}@nats.internal:4443 (Authorization Violation)",
])
@pytest.mark.parametrize("formatter", [JsonLines("api"), Text("api")])
def test_no_password_in_a_url_survives_a_formatter(leak: str,
                                                   formatter: logging.Formatter) -> None:
    secret = "s3cr3t-Pa55"
    line = formatter.format(record(leak.format(secret=secret)))
    assert REDACTED in line
    assert secret not in line, line


@pytest.mark.parametrize("kept", ["postgresql://postgres@127.0.0.1:5432/postgres",
                                  "redis://127.0.0.1:6379/0", "nats://127.0.0.1:4222",
                                  "http://127.0.0.1:8000/v1/me", "zone z1 at 12.5@3"])
def test_addresses_that_are_no_email_are_kept(kept: str) -> None:
    assert kept in JsonLines("api").format(record(kept))


@pytest.mark.parametrize("adversarial", [
    "GET /" + "a" * 200_000, "Key (" * 40_000, "eyJ" * 70_000, "a@" * 100_000,
    "bearer " * 30_000, 'password":"' * 20_000, "a.b-c+d" * 30_000 + "@example.com",
    "://" * 70_000, "nats://" + "a:" * 100_000, "://a:" + "b" * 200_000,
])
def test_redaction_is_linear_in_the_line(adversarial: str) -> None:
    """Every line is redacted on the event loop, and a client puts its URL in one: a
    pattern that re-scans a run from each of its positions made a 16 KB path cost a
    second (quadratic: ~3 minutes at this size). This is no speed target (benches have
    those): the bound only tells linear from quadratic, which are three orders apart."""
    began = time.perf_counter()
    redact(adversarial)
    assert time.perf_counter() - began < 5.0
