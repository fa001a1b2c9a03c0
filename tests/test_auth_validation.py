"""Register and login over real HTTP: every validation rule of docs/protocol.md "Auth",
case-insensitive uniqueness, no half-written accounts after a conflict, the HTTP body
errors (bad_json, 415, 413, 404, a body or a next head that trickles in past its
deadline) and their exact error shape, identical answers for an
unknown user and a wrong password, the login limits (per address, and failures per account
whichever name is typed: an address at its limit cannot lock an account out, an unknown
name is limited as an account is) and the registration limits (per address and in all),
and a kept-alive connection still served after an answer that came before its body.
Clients on other addresses of 127.0.0.0/8 are other clients to the server.

`assert_error` and `api_client` are shared with the other validation test files.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import h11
import httpx
import orjson
import pytest
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

from persistence.users import User, get_user
from server.config import Settings
from tests.helpers import (
    api_client,
    assert_error,
    bearer,
    from_address,
    read_response,
    register,
    unique_name,
)

MISSING = object()  # a parametrize value meaning "leave the key out of the body"


def registration(**overrides: object) -> dict[str, object]:
    """A valid registration body; an override of MISSING drops that key."""
    username = unique_name("reg")
    body: dict[str, object] = {"username": username, "email": f"{username}@example.com",
                               "password": "correct horse"}
    for key, value in overrides.items():
        if value is MISSING:
            body.pop(key)
        else:
            body[key] = value
    return body


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"username": username, "password": password})


# --- register: validation ----------------------------------------------------------------

BAD_REGISTRATIONS = [
    # username: 3..32 of [A-Za-z0-9_.-], required, a string
    ("username", "ab"),
    ("username", "a" * 33),
    ("username", ""),
    ("username", "has space"),
    ("username", "bang!"),
    ("username", "semi;colon"),
    ("username", "at@sign"),
    ("username", "ünïcode"),
    ("username", "名前名前"),
    ("username", "trailing\n"),
    ("username", MISSING),
    ("username", None),
    ("username", 12345),
    ("username", ["abc"]),
    ("username", {"name": "abc"}),
    # email: plausible, at most 254 chars, required, a string
    ("email", "no-at-sign.example.com"),
    ("email", "nodot@example"),
    ("email", "two@@example.com"),
    ("email", "@example.com"),
    ("email", "local@"),
    ("email", "sp ace@example.com"),
    ("email", "trailing-dot@example."),
    ("email", ""),
    ("email", "a" * (255 - len("@example.com")) + "@example.com"),
    ("email", MISSING),
    ("email", None),
    ("email", 42),
    ("email", ["a@example.com"]),
    # password: 8..128 chars, required, a string
    ("password", "x" * 7),
    ("password", "x" * 129),
    ("password", ""),
    ("password", MISSING),
    ("password", None),
    ("password", 12345678),
    ("password", ["correct horse"]),
]


@pytest.mark.parametrize(("field", "value"), BAD_REGISTRATIONS)
async def test_register_rejects_invalid_field(
    client: httpx.AsyncClient, field: str, value: object
) -> None:
    body = registration(**{field: value})
    response = await client.post("/v1/auth/register", json=body)
    assert_error(response, 400, "validation_failed", {field})


async def test_register_reports_every_bad_field_at_once(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/register",
                                 json={"username": "x", "email": "nope", "password": 1})
    assert_error(response, 400, "validation_failed", {"username", "email", "password"})
    response = await client.post("/v1/auth/register", json={})
    assert_error(response, 400, "validation_failed", {"username", "email", "password"})


async def test_register_rejected_body_creates_nothing(client: httpx.AsyncClient) -> None:
    body = registration(password="short")
    assert (await client.post("/v1/auth/register", json=body)).status_code == 400
    # The username is still free: the same username registers fine afterwards.
    body["password"] = "long enough now"
    response = await client.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("template", [
    "x##",  # 3 chars: the shortest allowed
    "-_#",  # 3 chars of punctuation and a digit
    "L" + "#" * 31,  # 32 chars: the longest allowed
    "Mixed.Case-name_########",
])
async def test_register_accepts_username_boundaries(
    client: httpx.AsyncClient, template: str
) -> None:
    # Usernames are unique: each "#" becomes a random hex digit, keeping the length.
    username = "".join(random.choice("0123456789abcdef") if c == "#" else c for c in template)
    email = f"{uuid.uuid4().hex}@example.com"
    response = await client.post("/v1/auth/register", json={
        "username": username, "email": email, "password": "correct horse"})
    assert response.status_code == 201, response.text
    answer = await login(client, username, "correct horse")
    assert answer.status_code == 200, answer.text
    assert answer.json()["user_id"] == response.json()["user_id"]


@pytest.mark.parametrize("length", [8, 128])
async def test_register_accepts_password_boundaries(client: httpx.AsyncClient, length: int) -> None:
    password = ("pässwörd" * 20)[:length]
    assert len(password) == length
    user = await register(client, password=password)
    response = await login(client, user["username"], password)
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == user["user_id"]
    assert (await login(client, user["username"], password[:-1])).status_code == 401


async def test_register_accepts_email_of_254_chars(client: httpx.AsyncClient) -> None:
    domain = f"@{uuid.uuid4().hex}.example.com"
    email = "a" * (254 - len(domain)) + domain
    assert len(email) == 254
    body = registration(email=email)
    response = await client.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text


async def test_register_answer_has_user_id_and_tokens(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/register", json=registration())
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user_id", "token", "refresh_token", "expires_in"}
    uuid.UUID(body["user_id"])
    assert body["token"].count(".") == 2


async def test_register_is_also_served_under_api_prefix(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/register", json=registration())
    assert response.status_code == 201, response.text
    bad = await client.post("/api/auth/register", json=registration(username="x"))
    assert_error(bad, 400, "validation_failed", {"username"})


# --- register: uniqueness ------------------------------------------------------------------

async def test_duplicate_username_in_other_case_conflicts(client: httpx.AsyncClient) -> None:
    first = await register(client, unique_name("Dup"))
    loser = {"username": first["username"].upper(),
             "email": f"other_{uuid.uuid4().hex}@example.com", "password": "loser password"}
    response = await client.post("/v1/auth/register", json=loser)
    assert_error(response, 409, "conflict", {"username": "taken"})
    # Nothing of the loser was written: neither its password nor its email logs in.
    for name in (loser["username"], first["username"], loser["email"]):
        assert_error(await login(client, name, loser["password"]), 401, "invalid_credentials")
    # The winner is untouched.
    assert (await login(client, loser["username"], first["password"])).status_code == 200


async def test_duplicate_email_in_other_case_conflicts(client: httpx.AsyncClient) -> None:
    first = await register(client)
    email = f"{first['username']}@example.com"
    loser = {"username": unique_name("loser"), "email": email.upper(),
             "password": "loser password"}
    response = await client.post("/v1/auth/register", json=loser)
    assert_error(response, 409, "conflict", {"email": "taken"})
    # Nothing half-written: the loser's username does not exist.
    assert_error(await login(client, loser["username"], loser["password"]),
                 401, "invalid_credentials")
    assert_error(await login(client, email, loser["password"]), 401, "invalid_credentials")
    # The loser's username is still free.
    retry = {**loser, "email": f"{loser['username']}@example.com"}
    assert (await client.post("/v1/auth/register", json=retry)).status_code == 201


async def test_exact_duplicate_conflicts(client: httpx.AsyncClient) -> None:
    body = registration()
    assert (await client.post("/v1/auth/register", json=body)).status_code == 201
    # Both are taken; the username is named (docs/protocol.md).
    assert_error(await client.post("/v1/auth/register", json=body), 409, "conflict",
                 {"username": "taken"})


async def stored_user(settings: Settings, user_id: str) -> User | None:
    """The auth.users row, read straight from Postgres on a connection of our own."""
    async with trio_asyncio.open_loop():
        conn = await aio_as_trio(asyncpg.connect)(settings.database_url)
        try:
            return await aio_as_trio(get_user)(conn, uuid.UUID(user_id))
        finally:
            await aio_as_trio(conn.close)()


async def test_email_is_stored_lower_cased(client: httpx.AsyncClient, settings: Settings) -> None:
    username = unique_name("Low")
    mixed = f"{username.upper()}@Example.COM"
    response = await client.post("/v1/auth/register", json={
        "username": username, "email": mixed, "password": "correct horse"})
    assert response.status_code == 201, response.text
    user_id = response.json()["user_id"]
    stored = await stored_user(settings, user_id)
    assert stored is not None
    assert (stored.username, stored.email) == (username, mixed.lower())
    for spelling in (mixed, mixed.lower(), mixed.upper()):
        answer = await login(client, spelling, "correct horse")
        assert answer.status_code == 200, (spelling, answer.text)
        assert answer.json()["user_id"] == user_id
    # A different-case spelling of the stored address is the same address.
    again = await client.post("/v1/auth/register", json={
        "username": unique_name("other"), "email": mixed.lower(), "password": "correct horse"})
    assert_error(again, 409, "conflict", {"email": "taken"})


# --- HTTP body errors ----------------------------------------------------------------------

BODY_ROUTES = ["/v1/auth/register", "/v1/auth/login"]


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("raw", [
    b"{not json",
    b"",
    b'{"username": "abc",}',
    b"\xff\xfe{}",
    b'{"a": 1}{"b": 2}',
    b"[" * 2000 + b"]" * 2000,
])
async def test_malformed_json_is_bad_json(client: httpx.AsyncClient, path: str, raw: bytes) -> None:
    response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_json")


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("value", [[], [1, 2], "a string", 42, None, True])
async def test_json_that_is_not_an_object_is_bad_json(
    client: httpx.AsyncClient, path: str, value: object
) -> None:
    response = await client.post(path, content=orjson.dumps(value),
                                 headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_json")


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("content_type", [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    None,
])
async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, path: str, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = orjson.dumps(registration())
    response = await client.post(path, content=body, headers=headers)
    assert_error(response, 415, "unsupported_media_type")


async def test_json_with_charset_parameter_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/register", content=orjson.dumps(registration()),
                                 headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 201, response.text


def padded_registration(size: int) -> bytes:
    """A valid registration body of exactly `size` bytes (an ignored key holds the padding)."""
    body = registration(padding="")
    base = len(orjson.dumps(body))
    body["padding"] = "x" * (size - base)
    raw = orjson.dumps(body)
    assert len(raw) == size
    return raw


@pytest.mark.parametrize("path", [*BODY_ROUTES, "/v1/characters"])
async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, settings: Settings, path: str
) -> None:
    user = await register(client)
    raw = padded_registration(settings.max_body_bytes + 1)
    response = await client.post(path, content=raw, headers={
        "content-type": "application/json", **bearer(user["token"])})
    assert_error(response, 413, "too_large")


async def post_chunked(base_url: str, path: str, body: bytes) -> httpx.Response:
    """POST `body` as application/json with Transfer-Encoding: chunked over a raw socket.

    (httpx would stream it from an async generator that an early 413 leaves unfinished.)
    """
    url = httpx.URL(base_url)
    head = (f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    reader = h11.Connection(h11.CLIENT)
    reader.send(h11.Request(method="POST", target=path, headers=[
        ("host", f"{url.host}:{url.port}"), ("transfer-encoding", "chunked")]))
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(url.host, url.port or 80) as stream:

            async def send() -> None:
                try:
                    await stream.send_all(head)
                    for start in range(0, len(body), 1024):
                        piece = body[start:start + 1024]
                        await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await stream.send_all(b"0\r\n\r\n")
                except trio.BrokenResourceError:
                    pass  # the server answered early and closed: fine

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                response = await read_response(stream, reader)
                nursery.cancel_scope.cancel()
    return response


async def test_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """No Content-Length (chunked): the limit still holds while reading."""
    raw = padded_registration(settings.max_body_bytes * 4)
    response = await post_chunked(str(client.base_url), "/v1/auth/register", raw)
    assert_error(response, 413, "too_large")


async def test_streamed_body_under_the_limit_is_accepted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    raw = padded_registration(settings.max_body_bytes // 2)
    response = await post_chunked(str(client.base_url), "/v1/auth/register", raw)
    assert response.status_code == 201, response.text


async def test_body_of_exactly_the_limit_is_accepted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    raw = padded_registration(settings.max_body_bytes)
    response = await client.post("/v1/auth/register", content=raw,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text


BODY_TIMEOUT_S = 1.0


async def trickle(url: httpx.URL, head: bytes, body: bytes | None = None,
                  every_s: float = 0.2) -> tuple[httpx.Response | None, float]:
    """Send `head` (and `body`, if given, then nothing more), then a byte every `every_s`,
    as a slow or hostile client does, until the server answers and closes; the answer
    (None if the server closed without one) and the seconds from the head to the close."""
    reader = h11.Connection(h11.CLIENT)
    answer: httpx.Response | None = None
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(url.host, url.port or 80) as stream:
            if body is not None:  # a first request, answered in full
                await stream.send_all(head + body)
                reader.send(h11.Request(method="GET", target="/healthz",
                                        headers=[("host", "x")]))
                reader.send(h11.EndOfMessage())
                first = await read_response(stream, reader)
                assert first.status_code == 200, first.text
                head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
                reader = h11.Connection(h11.CLIENT)
            began = trio.current_time()
            await stream.send_all(head)

            async def drip() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while True:
                        await trio.sleep(every_s)
                        await stream.send_all(b"x")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drip)
                if body is None:
                    answer = await read_response(stream, reader)
                while await stream.receive_some(65536):  # then the close
                    pass
                nursery.cancel_scope.cancel()
    return answer, trio.current_time() - began


@pytest.mark.parametrize(("method", "path", "status"), [("POST", "/v1/auth/login", 400),
                                                     ("GET", "/healthz", 200)])
async def test_a_body_that_trickles_in_is_cut_off_at_its_deadline(
    settings: Settings, nursery: trio.Nursery, method: str, path: str, status: int
) -> None:
    """A byte every 0.2 s: never idle for long, so only a deadline for the whole body ends
    it. A route that reads the body answers 400; one that does not has answered, but its
    connection closes all the same (the next request could not be told from the body)."""
    async with api_client(settings, nursery, http_body_timeout_s=BODY_TIMEOUT_S) as http:
        url = http.base_url
        head = (f"{method} {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode()
        response, took = await trickle(url, head)
    assert response is not None
    if status == 400:
        error = assert_error(response, 400, "validation_failed")
        assert f"{BODY_TIMEOUT_S:g} s" in error["message"], error
    else:
        assert response.status_code == 200, response.text
    assert response.headers["connection"] == "close"
    assert BODY_TIMEOUT_S - 0.1 <= took < BODY_TIMEOUT_S + 1.5, took


async def test_the_next_request_head_on_a_kept_alive_connection_has_a_deadline(
    settings: Settings, nursery: trio.Nursery
) -> None:
    """The edge reads a connection's first head under WORLD_HANDSHAKE_TIMEOUT; hypercorn
    reads the next ones, under its keep-alive timeout, set to the same."""
    async with api_client(settings, nursery, world_handshake_timeout_s=1.0) as http:
        url = http.base_url
        first = f"GET /healthz HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n\r\n".encode()
        response, took = await trickle(url, first, body=b"")
    assert response is None  # nothing to answer: the head never ended
    assert 0.9 <= took < 2.5, took


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/nope"),
    ("GET", "/v1/nothing/here"),
    ("POST", "/v1/auth/nope"),
    ("GET", "/v1/characters/extra/segments"),
])
async def test_unknown_route_is_404_in_the_error_shape(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    assert_error(await client.request(method, path), 404, "not_found")


async def test_wrong_method_is_an_error_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/auth/register")
    assert_error(response, 405, "method_not_allowed")


# --- login -------------------------------------------------------------------------------

async def test_wrong_password_and_unknown_user_answer_identically(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client)
    wrong_password = await login(client, user["username"], "not the password")
    unknown_user = await login(client, unique_name("ghost"), "not the password")
    unknown_email = await login(client, f"{unique_name('ghost')}@example.com", "whatever1")
    assert_error(wrong_password, 401, "invalid_credentials")
    assert wrong_password.content == unknown_user.content == unknown_email.content
    assert (wrong_password.headers.get("www-authenticate")
            == unknown_user.headers.get("www-authenticate"))


async def test_login_by_username_in_any_case(client: httpx.AsyncClient) -> None:
    user = await register(client, unique_name("Case"))
    for spelling in (user["username"], user["username"].upper(), user["username"].lower()):
        response = await login(client, spelling, user["password"])
        assert response.status_code == 200, response.text
        assert response.json()["user_id"] == user["user_id"]
        assert set(response.json()) == {"user_id", "token", "refresh_token", "expires_in"}


async def test_password_is_case_sensitive(client: httpx.AsyncClient) -> None:
    user = await register(client, password="Correct Horse")
    assert_error(await login(client, user["username"], "correct horse"),
                 401, "invalid_credentials")


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"username", "password"}),
    ({"username": "someone"}, {"password"}),
    ({"password": "something"}, {"username"}),
    ({"username": None, "password": "something"}, {"username"}),
    ({"username": 5, "password": "something"}, {"username"}),
    ({"username": "someone", "password": 12345678}, {"password"}),
    ({"username": ["a"], "password": {"b": 1}}, {"username", "password"}),
])
async def test_login_missing_or_non_string_fields(
    client: httpx.AsyncClient, body: dict[str, object], fields: set[str]
) -> None:
    assert_error(await client.post("/v1/auth/login", json=body), 400, "validation_failed", fields)


@pytest.mark.parametrize("login_value", ["nul\x00byte", "\x00", "a\x00@example.com"])
async def test_login_with_a_nul_byte_is_invalid_credentials(
    client: httpx.AsyncClient, login_value: str
) -> None:
    """Postgres text cannot hold NUL; such a login matches nobody (not a 500)."""
    assert_error(await login(client, login_value, "correct horse"), 401, "invalid_credentials")


@pytest.mark.parametrize("email", ["nul\x00byte@example.com", "ctl\x01@example.com"])
async def test_register_email_with_control_characters_is_rejected(
    client: httpx.AsyncClient, email: str
) -> None:
    response = await client.post("/v1/auth/register", json=registration(email=email))
    assert_error(response, 400, "validation_failed", {"email"})


# --- login and registration limits ---------------------------------------------------------

FAILURES, FROM_ALL, PER_ADDRESS = 3, 5, 10


@pytest.fixture
async def limited(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, nursery, login_failures_per_account_and_address=FAILURES,
                          login_failures_per_account=FROM_ALL,
                          login_rate_per_address=PER_ADDRESS) as http:
        yield http


def assert_rate_limited(response: httpx.Response, window_s: float) -> int:
    assert_error(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= window_s + 1
    return int(retry_after)


async def test_login_failures_are_limited_per_account(
    limited: httpx.AsyncClient, settings: Settings
) -> None:
    victim = await register(limited)
    for _ in range(FAILURES):
        assert_error(await login(limited, victim["username"], "wrong guess"),
                     401, "invalid_credentials")
    # The next attempt is refused before the password is even looked at: even the right one.
    window = settings.login_rate_window_s
    assert_rate_limited(await login(limited, victim["username"], victim["password"]), window)
    assert_rate_limited(await login(limited, victim["username"].upper(), "x"), window)
    # Another account from the same address still gets through.
    other = await register(limited)
    response = await login(limited, other["username"], other["password"])
    assert response.status_code == 200, response.text


async def test_a_guesser_under_its_limits_locks_the_account_out_for_itself_only(
    limited: httpx.AsyncClient, settings: Settings
) -> None:
    """The attack that remained once an address at its limit counted no more: a guesser
    well under its address's limit used up the account's failures, and its owner was
    refused with the right password for the rest of the window."""
    victim = await register(limited)
    async with from_address(limited, "127.0.0.5") as attacker:
        for _ in range(FAILURES):
            assert_error(await login(attacker, victim["username"], "wrong guess"),
                         401, "invalid_credentials")
        assert_rate_limited(await login(attacker, victim["username"], victim["password"]),
                            settings.login_rate_window_s)
    response = await login(limited, victim["username"], victim["password"])
    assert response.status_code == 200, response.text


async def test_guessers_on_many_addresses_meet_the_accounts_own_limit(
    limited: httpx.AsyncClient, settings: Settings
) -> None:
    victim = await register(limited)
    for n in range(FROM_ALL):  # one failure each from FROM_ALL addresses
        async with from_address(limited, f"127.0.1.{n + 1}") as guesser:
            assert_error(await login(guesser, victim["username"], "wrong guess"),
                         401, "invalid_credentials")
    async with from_address(limited, "127.0.1.100") as another:
        assert_rate_limited(await login(another, victim["username"], "wrong guess"),
                            settings.login_rate_window_s)


async def test_an_address_at_its_limit_cannot_lock_anyone_out(
    limited: httpx.AsyncClient, settings: Settings
) -> None:
    """The attack: a guesser already refused for its address went on counting against the
    account it named, so ten cheap requests locked anyone out."""
    victim = await register(limited)
    async with from_address(limited, "127.0.0.3") as attacker:
        for n in range(PER_ADDRESS):
            assert_error(await login(attacker, unique_name(f"guess{n}"), "wrong guess"),
                         401, "invalid_credentials")
        for _ in range(10):
            assert_rate_limited(await login(attacker, victim["username"], "wrong guess"),
                                settings.login_rate_window_s)
    async with from_address(limited, "127.0.0.4") as elsewhere:
        response = await login(elsewhere, victim["username"], victim["password"])
    assert response.status_code == 200, response.text


async def test_username_and_email_count_as_one_account(
    limited: httpx.AsyncClient, settings: Settings
) -> None:
    victim = await register(limited)
    email = f"{victim['username']}@example.com"
    for name in (victim["username"], email.upper(), email):
        assert_error(await login(limited, name, "wrong guess"), 401, "invalid_credentials")
    for name in (victim["username"], email):
        assert_rate_limited(await login(limited, name, victim["password"]),
                            settings.login_rate_window_s)


async def test_a_successful_login_does_not_count(limited: httpx.AsyncClient) -> None:
    user = await register(limited)
    for _ in range(FAILURES + 1):
        response = await login(limited, user["username"], user["password"])
        assert response.status_code == 200, response.text
    for _ in range(FAILURES - 1):
        assert_error(await login(limited, user["username"], "wrong guess"),
                     401, "invalid_credentials")
    response = await login(limited, user["username"], user["password"])
    assert response.status_code == 200, response.text


async def test_an_unknown_name_is_limited_as_an_account_is(limited: httpx.AsyncClient) -> None:
    """The limit must not tell which accounts exist: the same answers, in the same order."""
    known = (await register(limited))["username"]
    answers = {}
    for name in (known, unique_name("ghost")):
        tried = [await login(limited, name, "wrong guess") for _ in range(FAILURES + 1)]
        answers[name] = [(r.status_code, r.content) for r in tried]
    assert [status for status, _ in answers[known]] == [401] * FAILURES + [429]
    assert answers[known] == list(answers.values())[1]


async def test_login_limit_per_address(limited: httpx.AsyncClient, settings: Settings) -> None:
    user = await register(limited)
    for n in range(PER_ADDRESS - 1):
        assert_error(await login(limited, unique_name(f"guess{n}"), "wrong guess"),
                     401, "invalid_credentials")
    assert (await login(limited, user["username"], user["password"])).status_code == 200
    # PER_ADDRESS attempts from this address so far, one of them right: all count here.
    assert_rate_limited(await login(limited, user["username"], user["password"]),
                        settings.login_rate_window_s)
    async with from_address(limited, "127.0.0.5") as elsewhere:
        response = await login(elsewhere, user["username"], user["password"])
    assert response.status_code == 200, response.text


async def test_login_rate_limit_does_not_apply_to_validation_errors(
    limited: httpx.AsyncClient,
) -> None:
    for _ in range(PER_ADDRESS + 1):
        assert_error(await limited.post("/v1/auth/login", json={"username": "x"}),
                     400, "validation_failed", {"password"})
    user = await register(limited)
    assert (await login(limited, user["username"], user["password"])).status_code == 200


async def test_registrations_are_limited_per_address(
    settings: Settings, nursery: trio.Nursery
) -> None:
    async with api_client(settings, nursery, register_rate_per_address=2,
                          register_rate_total=100) as http:
        for _ in range(2):
            assert (await http.post("/v1/auth/register", json=registration())).status_code == 201
        refused = registration()
        assert_rate_limited(await http.post("/v1/auth/register", json=refused),
                            settings.register_rate_window_s)
        # Checked after the body (a bad one is still a 400) and before anything is made.
        assert_error(await http.post("/v1/auth/register", json=registration(username="x")),
                     400, "validation_failed", {"username"})
        async with from_address(http, "127.0.0.6") as elsewhere:
            response = await elsewhere.post("/v1/auth/register", json=refused)
        assert response.status_code == 201, response.text


async def test_registrations_are_limited_in_all(settings: Settings, nursery: trio.Nursery) -> None:
    async with api_client(settings, nursery, register_rate_per_address=100,
                          register_rate_total=2) as http:
        for address in ("127.0.0.7", "127.0.0.8"):
            async with from_address(http, address) as client:
                response = await client.post("/v1/auth/register", json=registration())
            assert response.status_code == 201, response.text
        async with from_address(http, "127.0.0.9") as client:
            assert_rate_limited(await client.post("/v1/auth/register", json=registration()),
                                settings.register_rate_window_s)


# Requests answered without reading their body, whose body comes after the head (as a
# client that writes the head and the body apart sends it): schemathesis found that the
# next request on such a connection got no answer at all.
EARLY_ANSWERS = [
    ("POST", "/v1/auth/login", "multipart/form-data", 415),
    ("PUT", "/v1/auth/login", "application/json", 405),
    ("POST", "/nowhere", "application/json", 404),
    ("POST", "/v1/characters", "application/json", 401),
]


@pytest.mark.parametrize(("method", "path", "content_type", "status"), EARLY_ANSWERS)
async def test_a_connection_answered_before_its_body_came_serves_the_next_request(
    client: httpx.AsyncClient, method: str, path: str, content_type: str, status: int
) -> None:
    body = orjson.dumps({"username": "ada_99", "password": "correct horse"})
    url = client.base_url
    host = [("host", f"{url.host}:{url.port}")]
    reader = h11.Connection(h11.CLIENT)
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(url.host, url.port or 80) as stream:
            await stream.send_all(reader.send(h11.Request(method=method, target=path, headers=[
                *host, ("content-type", content_type), ("content-length", str(len(body)))])))
            await trio.sleep(0.05)  # the body in a later segment, after the answer
            await stream.send_all(reader.send(h11.Data(data=body)) +
                                  reader.send(h11.EndOfMessage()))
            first = await read_response(stream, reader)
            assert first.status_code == status, first.text
            assert "close" not in first.headers.get("connection", "")
            reader.start_next_cycle()
            await stream.send_all(reader.send(h11.Request(method="GET", target="/healthz",
                                                          headers=host)) +
                                  reader.send(h11.EndOfMessage()))
            second = await read_response(stream, reader)
    assert second.status_code == 200, second.text


async def test_a_body_over_the_limit_is_answered_and_its_connection_closed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """Not worth reading: 413, Connection: close, and the close really comes."""
    url = client.base_url
    size = settings.max_body_bytes + 1
    reader = h11.Connection(h11.CLIENT)
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(url.host, url.port or 80) as stream:
            await stream.send_all(reader.send(h11.Request(
                method="POST", target="/v1/auth/login",
                headers=[("host", f"{url.host}:{url.port}"),
                         ("content-type", "application/json"),
                         ("content-length", str(size))])))
            await trio.sleep(0.05)
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"x" * size)
            response = await read_response(stream, reader)
            assert_error(response, 413, "too_large")
            assert response.headers["connection"] == "close"
            while await stream.receive_some(65536):  # then EOF (the bug: it never came)
                pass
