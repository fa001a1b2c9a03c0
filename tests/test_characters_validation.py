"""POST /v1/characters validation over real HTTP (docs/protocol.md "Characters"): name and class
rules, the default class, per-user case-insensitive name uniqueness, the per-user character
limit (also under concurrent creates), and authentication of the create call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import jwt
import orjson
import pytest
import trio

from server.config import Settings
from tests.helpers import api_client, assert_error, bearer, register

CHARACTER_KEYS = {"id", "user_id", "name", "class", "zone_id", "x", "y", "active", "created_at"}
CLASSES = ["recruit", "scout", "engineer", "medic", "heavy"]


async def create(client: httpx.AsyncClient, token: str, body: object) -> httpx.Response:
    return await client.post("/v1/characters", json=body, headers=bearer(token))


async def names(client: httpx.AsyncClient, token: str) -> list[str]:
    response = await client.get("/v1/characters", headers=bearer(token))
    assert response.status_code == 200, response.text
    return [c["name"] for c in response.json()["characters"]]


# --- name ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "a",
    "a" * 25,
    "Ö" * 25,
    "",
    " ",
    "   ",
    " " * 24,
    "a!b",
    "<script>",
    "<script>alert(1)</script>",
    "semi;colon",
    "dot.name",
    "quote'name",
    "tab\tname",
    "new\nline",
    "nul\x00byte",
    "smile😀",
    "slash/name",
    "\u0308ab",  # a combining mark with no base character
    None,
    123,
    12.5,
    True,
    ["Sam"],
    {"name": "Sam"},
])
async def test_bad_name_is_rejected(client: httpx.AsyncClient, name: object) -> None:
    user = await register(client)
    response = await create(client, user["token"], {"name": name, "class": "scout"})
    assert_error(response, 400, "validation_failed", {"name"})
    assert await names(client, user["token"]) == []


async def test_missing_name_is_rejected(client: httpx.AsyncClient) -> None:
    user = await register(client)
    assert_error(await create(client, user["token"], {"class": "scout"}),
                 400, "validation_failed", {"name"})
    assert_error(await create(client, user["token"], {}), 400, "validation_failed", {"name"})


@pytest.mark.parametrize("name", [
    "Ölga",
    "Зоя",
    "名前テスト",
    "李白",
    "مرحبا",
    "Ωmega-7",
    "Slick Sam",
    "under_score",
    "dash-name",
    "mixed Ünï_cödé-42",
    "Ab",
    "42",
    "a" * 24,
    "字" * 24,
    "हिन्दी",  # Devanagari: vowel signs are combining marks
    "Zoe\u0308",  # decomposed ë
    "ไทย ลอง",
])
async def test_good_name_is_accepted(client: httpx.AsyncClient, name: str) -> None:
    user = await register(client)
    response = await create(client, user["token"], {"name": name})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    assert await names(client, user["token"]) == [name]


# --- class ---------------------------------------------------------------------------------

@pytest.mark.parametrize("class_", ["wizard", "Scout", "SCOUT", " scout", "scout ", "recruits",
                                    0, 5, True, ["scout"], {"class": "scout"}])
async def test_bad_class_is_rejected(client: httpx.AsyncClient, class_: object) -> None:
    user = await register(client)
    response = await create(client, user["token"], {"name": "Good Name", "class": class_})
    assert_error(response, 400, "validation_failed", {"class"})
    assert await names(client, user["token"]) == []


async def test_bad_name_and_class_are_both_reported(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await create(client, user["token"], {"name": "!", "class": "wizard"})
    assert_error(response, 400, "validation_failed", {"name", "class"})


@pytest.mark.parametrize("body", [
    {"name": "Default Dan"},
    {"name": "Default Dan", "class": ""},
    {"name": "Default Dan", "class": None},
])
async def test_empty_or_missing_class_means_recruit(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    user = await register(client)
    response = await create(client, user["token"], body)
    assert response.status_code == 201, response.text
    assert response.json()["class"] == "recruit"
    listed = await client.get("/v1/characters", headers=bearer(user["token"]))
    assert [c["class"] for c in listed.json()["characters"]] == ["recruit"]


async def test_every_class_is_accepted(client: httpx.AsyncClient, settings: Settings) -> None:
    user = await register(client)
    for class_ in CLASSES:
        response = await create(client, user["token"], {"name": f"The {class_}", "class": class_})
        assert response.status_code == 201, response.text
        character = response.json()
        assert set(character) == CHARACTER_KEYS
        assert character["class"] == class_
        assert character["user_id"] == user["user_id"]
        assert character["zone_id"] == settings.world_zone_id
        assert (character["x"], character["y"], character["active"]) == (0.0, 0.0, False)
    listed = await client.get("/v1/characters", headers=bearer(user["token"]))
    assert [c["class"] for c in listed.json()["characters"]] == CLASSES


# --- uniqueness ----------------------------------------------------------------------------

@pytest.mark.parametrize(("first", "second"), [
    ("Slick Sam", "Slick Sam"),
    ("Slick Sam", "slick sam"),
    ("Slick Sam", "SLICK SAM"),
    ("Ölga", "ÖLGA"),
    ("Зоя", "ЗОЯ"),
    ("Straße", "STRASSE"),
])
async def test_duplicate_name_for_the_same_user_conflicts(
    client: httpx.AsyncClient, first: str, second: str
) -> None:
    user = await register(client)
    assert (await create(client, user["token"], {"name": first})).status_code == 201
    response = await create(client, user["token"], {"name": second, "class": "heavy"})
    assert_error(response, 409, "conflict", {"name": "taken"})
    assert await names(client, user["token"]) == [first]


async def test_same_name_for_two_users_is_fine(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    for user in (alice, bob):
        response = await create(client, user["token"], {"name": "Twin Name"})
        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == user["user_id"]
    assert await names(client, alice["token"]) == ["Twin Name"]
    assert await names(client, bob["token"]) == ["Twin Name"]


async def test_a_conflict_does_not_stop_later_creates(client: httpx.AsyncClient) -> None:
    user = await register(client)
    assert (await create(client, user["token"], {"name": "First"})).status_code == 201
    assert_error(await create(client, user["token"], {"name": "first"}), 409, "conflict",
                 {"name": "taken"})
    assert (await create(client, user["token"], {"name": "Second"})).status_code == 201
    assert await names(client, user["token"]) == ["First", "Second"]


# --- the per-user limit --------------------------------------------------------------------

LIMIT = 3


@pytest.fixture
async def limited(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, nursery, max_characters_per_user=LIMIT) as http:
        yield http


async def test_character_limit_per_user(limited: httpx.AsyncClient) -> None:
    user = await register(limited)
    for n in range(LIMIT):
        response = await create(limited, user["token"], {"name": f"Hero {n}"})
        assert response.status_code == 201, response.text
    over = await create(limited, user["token"], {"name": "One Too Many"})
    assert_error(over, 409, "conflict", {"name": "limit_reached"})
    assert await names(limited, user["token"]) == [f"Hero {n}" for n in range(LIMIT)]
    # The limit is per user: somebody else can still create.
    other = await register(limited)
    assert (await create(limited, other["token"], {"name": "Hero 0"})).status_code == 201


async def test_character_limit_holds_under_concurrent_creates(
    limited: httpx.AsyncClient,
) -> None:
    user = await register(limited)
    statuses: dict[str, int] = {}

    async def attempt(name: str) -> None:
        response = await create(limited, user["token"], {"name": name})
        statuses[name] = response.status_code
        if response.status_code != 201:  # the names differ: only the limit refuses
            assert_error(response, 409, "conflict", {"name": "limit_reached"})

    async with trio.open_nursery() as nursery:
        for n in range(2 * LIMIT):
            nursery.start_soon(attempt, f"Racer {n}")

    assert sorted(statuses.values()) == [201] * LIMIT + [409] * LIMIT, statuses
    listed = await names(limited, user["token"])
    assert len(listed) == LIMIT
    assert set(listed) == {name for name, status in statuses.items() if status == 201}


async def test_default_limit_is_ten(client: httpx.AsyncClient, settings: Settings) -> None:
    assert settings.max_characters_per_user == 10
    user = await register(client)
    for n in range(10):
        assert (await create(client, user["token"], {"name": f"Member {n}"})).status_code == 201
    assert_error(await create(client, user["token"], {"name": "Eleventh"}), 409, "conflict",
                 {"name": "limit_reached"})
    assert len(await names(client, user["token"])) == 10


# --- authentication and body errors --------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer garbage"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
])
async def test_create_without_a_valid_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/characters", json={"name": "Nobody"}, headers=headers)
    assert_error(response, 401, "unauthenticated")


async def test_create_checks_the_token_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/characters", content=b"not json",
                                 headers={"content-type": "application/json"})
    assert_error(response, 401, "unauthenticated")


async def test_forged_token_creates_nothing(client: httpx.AsyncClient) -> None:
    user = await register(client)
    forged = jwt.encode({"sub": user["user_id"], "exp": 4_000_000_000},
                        "a-forger-secret-that-is-long-enough-for-hs256", algorithm="HS256")
    response = await create(client, forged, {"name": "Forged"})
    assert_error(response, 401, "unauthenticated")
    assert await names(client, user["token"]) == []


@pytest.mark.parametrize(("content", "content_type", "status", "code"), [
    (b"{nope", "application/json", 400, "bad_json"),
    (b"[]", "application/json", 400, "bad_json"),
    (orjson.dumps({"name": "Plain"}), "text/plain", 415, "unsupported_media_type"),
])
async def test_create_body_errors(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, code: str
) -> None:
    user = await register(client)
    response = await client.post("/v1/characters", content=content, headers={
        "content-type": content_type, **bearer(user["token"])})
    assert_error(response, status, code)
    assert await names(client, user["token"]) == []


async def test_a_conflict_logs_nothing_above_info(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An ordinary 409 is the client's business: no warning of the server's (it logged
    asyncpg's 'Resetting connection with an active transaction' at every one)."""
    user = await register(client)
    assert (await create(client, user["token"], {"name": "Once"})).status_code == 201
    with caplog.at_level(logging.INFO):
        caplog.clear()  # what the server logged as it started is not this request's
        assert_error(await create(client, user["token"], {"name": "once"}), 409, "conflict",
                     {"name": "taken"})
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
