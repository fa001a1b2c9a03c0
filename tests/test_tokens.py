"""JWT handling: every malformed, forged, expired or wrong-algorithm token is refused with
401 `unauthenticated` on GET /v1/characters over real HTTP, a user's token never shows
another user's characters, and unit tests of auth.tokens.Tokens issue/verify/header parsing.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from collections.abc import Callable

import h11
import httpx
import jwt
import pytest
import trio

from auth.tokens import Claims, Tokens
from persistence.errors import Unauthenticated
from server.config import Settings
from tests.helpers import assert_error, bearer, read_response, register

OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256"


def signing_secret(settings: Settings) -> str:
    return settings.jwt_keys[0][1]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_jwt(
    header: dict[str, object], claims: dict[str, object], key: str | None,
    digest: str = "sha256",
) -> str:
    """A JWT built without pyjwt, so any header/claims/signature can be produced."""
    signing_input = (f"{b64url(json.dumps(header).encode())}."
                     f"{b64url(json.dumps(claims).encode())}")
    signature = (b"" if key is None
                 else hmac.new(key.encode(), signing_input.encode(), digest).digest())
    return f"{signing_input}.{b64url(signature)}"


def good_claims(user_id: str, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "sid": str(uuid.uuid4()), "iat": now,
                                 "exp": now + 600}
    for name, value in changes.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


HS256: dict[str, object] = {"alg": "HS256", "typ": "JWT", "kid": "default"}


def tampered(token: str, user_id: str) -> str:
    """`token` with its payload swapped for one naming `user_id`, signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(good_claims(user_id)).encode())}.{signature}"


async def raw_get(base_url: str, path: str, authorization: str) -> httpx.Response:
    """GET with an Authorization header sent byte for byte, over a raw socket."""
    url = httpx.URL(base_url)
    request = (f"GET {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
               f"Authorization: {authorization}\r\nConnection: close\r\n\r\n").encode()
    reader = h11.Connection(h11.CLIENT)
    reader.send(h11.Request(method="GET", target=path, headers=[("host", "x")]))
    reader.send(h11.EndOfMessage())
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(url.host, url.port or 80) as stream:
            await stream.send_all(request)
            return await read_response(stream, reader)


# Each case: (secret, the victim's user id, the victim's real token) -> Authorization or None.
BAD_AUTHORIZATION: dict[str, Callable[[str, str, str], str | None]] = {
    "missing": lambda s, u, t: None,
    "empty": lambda s, u, t: "",
    "basic scheme": lambda s, u, t: "Basic x",
    "basic scheme with a valid token": lambda s, u, t: f"Basic {t}",
    "token without scheme": lambda s, u, t: t,
    "bearer without token": lambda s, u, t: "Bearer",
    "bearer and empty token": lambda s, u, t: "Bearer ",
    "garbage": lambda s, u, t: "Bearer garbage",
    "three garbage segments": lambda s, u, t: "Bearer a.b.c",
    "truncated signature": lambda s, u, t: f"Bearer {t[:-4]}",
    "signature removed": lambda s, u, t: f"Bearer {t.rsplit('.', 1)[0]}.",
    "forged with another secret": lambda s, u, t: "Bearer " + jwt.encode(
        good_claims(u), OTHER_SECRET, algorithm="HS256", headers={"kid": "default"}),
    "no kid": lambda s, u, t: "Bearer " + hand_jwt(
        {"alg": "HS256", "typ": "JWT"}, good_claims(u), s),
    "unknown kid": lambda s, u, t: "Bearer " + hand_jwt(
        {**HS256, "kid": "other"}, good_claims(u), s),
    "kid a number": lambda s, u, t: "Bearer " + hand_jwt({**HS256, "kid": 1}, good_claims(u), s),
    "no sid": lambda s, u, t: "Bearer " + hand_jwt(HS256, good_claims(u, sid=None), s),
    "sid not a uuid": lambda s, u, t: "Bearer " + hand_jwt(
        HS256, good_claims(u, sid="x"), s),
    "payload tampered": lambda s, u, t: f"Bearer {tampered(t, str(uuid.uuid4()))}",
    "expired": lambda s, u, t: "Bearer " + hand_jwt(HS256, good_claims(
        u, iat=int(time.time()) - 7200, exp=int(time.time()) - 60), s),
    "alg none": lambda s, u, t: "Bearer " + hand_jwt(
        {"alg": "none", "typ": "JWT"}, good_claims(u), None),
    "alg None with the real signature": lambda s, u, t: "Bearer " + hand_jwt(
        {"alg": "None", "typ": "JWT"}, good_claims(u), s),
    "no exp": lambda s, u, t: "Bearer " + hand_jwt(HS256, good_claims(u, exp=None), s),
    "exp not a number": lambda s, u, t: "Bearer " + hand_jwt(
        HS256, good_claims(u, exp="never"), s),
    "no sub": lambda s, u, t: "Bearer " + hand_jwt(HS256, good_claims(u, sub=None), s),
    "sub not a uuid": lambda s, u, t: "Bearer " + hand_jwt(
        HS256, good_claims(u, sub="not-a-uuid"), s),
    "sub a number": lambda s, u, t: "Bearer " + hand_jwt(HS256, good_claims(u, sub=12345), s),
    "sub empty": lambda s, u, t: "Bearer " + hand_jwt(HS256, good_claims(u, sub=""), s),
    "HS512 with the right secret": lambda s, u, t: "Bearer " + hand_jwt(
        {"alg": "HS512", "typ": "JWT"}, good_claims(u), s, "sha512"),
    "HS384 with the right secret": lambda s, u, t: "Bearer " + hand_jwt(
        {"alg": "HS384", "typ": "JWT"}, good_claims(u), s, "sha384"),
    "HS256 header, HS512 signature": lambda s, u, t: "Bearer " + hand_jwt(
        HS256, good_claims(u), s, "sha512"),
}


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
async def test_bad_authorization_is_unauthenticated(
    client: httpx.AsyncClient, settings: Settings, case: str
) -> None:
    user = await register(client)
    created = await client.post("/v1/characters", json={"name": "Secret Sam"},
                                headers=bearer(user["token"]))
    assert created.status_code == 201, created.text
    value = BAD_AUTHORIZATION[case](signing_secret(settings), user["user_id"], user["token"])
    if value is not None and value != value.strip():
        # httpx (h11) refuses to send a header value with surrounding whitespace.
        response = await raw_get(str(client.base_url), "/v1/characters", value)
    else:
        headers = {} if value is None else {"Authorization": value}
        response = await client.get("/v1/characters", headers=headers)
    assert_error(response, 401, "unauthenticated")
    assert "Secret Sam" not in response.text


async def test_hand_built_token_with_the_right_secret_is_accepted(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """The control for the table above: the hand-built tokens differ only where intended."""
    user = await register(client)
    token = hand_jwt(HS256, good_claims(user["user_id"]), signing_secret(settings))
    response = await client.get("/v1/characters", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"characters": []}


async def test_raw_get_sends_the_header_as_given(client: httpx.AsyncClient) -> None:
    """The control for `raw_get`: a good header through it is accepted."""
    user = await register(client)
    response = await raw_get(str(client.base_url), "/v1/characters", f"Bearer {user['token']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"characters": []}


@pytest.mark.parametrize("authorization", [
    "Bearer {token}",
    "bearer {token}",
    "BEARER {token}",
    "Bearer   {token}",
])
async def test_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, authorization: str
) -> None:
    user = await register(client)
    response = await client.get("/v1/characters",
                                headers={"Authorization": authorization.format(**user)})
    assert response.status_code == 200, response.text


async def test_login_token_is_accepted(client: httpx.AsyncClient) -> None:
    user = await register(client)
    login = await client.post("/v1/auth/login", json={"username": user["username"],
                                                     "password": user["password"]})
    assert login.status_code == 200
    response = await client.get("/v1/characters", headers=bearer(login.json()["token"]))
    assert response.status_code == 200, response.text


async def test_other_users_token_never_sees_your_characters(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    created = await client.post("/v1/characters", json={"name": "Alice Main", "class": "medic"},
                                headers=bearer(alice["token"]))
    assert created.status_code == 201, created.text

    as_bob = await client.get("/v1/characters", headers=bearer(bob["token"]))
    assert as_bob.status_code == 200
    assert as_bob.json() == {"characters": []}

    as_alice = await client.get("/v1/characters", headers=bearer(alice["token"]))
    assert [c["id"] for c in as_alice.json()["characters"]] == [created.json()["id"]]

    # Bob creating a character with the same name does not touch Alice's list.
    bobs = await client.post("/v1/characters", json={"name": "Alice Main"},
                             headers=bearer(bob["token"]))
    assert bobs.status_code == 201, bobs.text
    assert bobs.json()["user_id"] == bob["user_id"]
    as_alice = await client.get("/v1/characters", headers=bearer(alice["token"]))
    assert [c["id"] for c in as_alice.json()["characters"]] == [created.json()["id"]]


async def test_issued_token_claims(client: httpx.AsyncClient, settings: Settings) -> None:
    before = int(time.time())
    user = await register(client)
    after = int(time.time())
    header = jwt.get_unverified_header(user["token"])
    assert header["alg"] == "HS256"
    assert header["kid"] == "default"
    claims = jwt.decode(user["token"], signing_secret(settings), algorithms=["HS256"])
    assert claims["sub"] == user["user_id"]
    uuid.UUID(claims["sid"])
    assert before <= claims["iat"] <= after
    assert claims["exp"] == claims["iat"] + settings.jwt_ttl_s


# --- unit tests of auth.tokens.Tokens -----------------------------------------------------

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
KEYS = (("default", SECRET),)
TTL = 900


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(KEYS, ttl_s=TTL)


def test_issue_sets_sub_sid_iat_exp_and_kid(tokens: Tokens) -> None:
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    token = tokens.issue(user_id, session_id, now=1_700_000_000.7)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": "default"}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sub": str(user_id), "sid": str(session_id), "iat": 1_700_000_000,
                      "exp": 1_700_000_000 + TTL}


def test_issue_defaults_to_now(tokens: Tokens) -> None:
    before = int(time.time())
    claims = jwt.decode(tokens.issue(uuid.uuid4(), uuid.uuid4()), SECRET, algorithms=["HS256"])
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == TTL


def test_verify_round_trip(tokens: Tokens) -> None:
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    now = int(time.time())
    assert tokens.verify(tokens.issue(user_id, session_id, now=now)) == Claims(
        user_id, session_id, float(now + TTL))


def test_verify_accepts_a_token_near_the_end_of_its_life(tokens: Tokens) -> None:
    user_id = uuid.uuid4()
    token = tokens.issue(user_id, uuid.uuid4(), now=time.time() - TTL + 60)
    assert tokens.verify(token).user_id == user_id


def test_verify_refuses_an_expired_token(tokens: Tokens) -> None:
    token = tokens.issue(uuid.uuid4(), uuid.uuid4(), now=time.time() - TTL - 60)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token)


def test_verify_refuses_another_secret(tokens: Tokens) -> None:
    token = Tokens((("default", OTHER_SECRET),), ttl_s=TTL).issue(uuid.uuid4(), uuid.uuid4())
    with pytest.raises(Unauthenticated):
        tokens.verify(token)


@pytest.mark.parametrize("token", [
    "",
    "garbage",
    "a.b.c",
    hand_jwt({"alg": "none", "typ": "JWT"}, good_claims(str(uuid.uuid4())), None),
    hand_jwt({"alg": "HS512", "typ": "JWT"}, good_claims(str(uuid.uuid4())), SECRET,
             "sha512"),
    hand_jwt(HS256, good_claims(str(uuid.uuid4()), exp=None), SECRET),
    hand_jwt(HS256, good_claims(str(uuid.uuid4()), sub=None), SECRET),
    hand_jwt(HS256, good_claims("not-a-uuid"), SECRET),
    hand_jwt(HS256, good_claims(str(uuid.uuid4()), exp="soon"), SECRET),
    hand_jwt(HS256, good_claims(str(uuid.uuid4()), sid=None), SECRET),
    hand_jwt({"alg": "HS256", "typ": "JWT"}, good_claims(str(uuid.uuid4())), SECRET),
    hand_jwt({**HS256, "kid": "k9"}, good_claims(str(uuid.uuid4())), SECRET),
], ids=["empty", "garbage", "segments", "alg-none", "hs512", "no-exp", "no-sub",
        "sub-not-uuid", "exp-string", "no-sid", "no-kid", "unknown-kid"])
def test_verify_refuses_bad_tokens(tokens: Tokens, token: str) -> None:
    with pytest.raises(Unauthenticated):
        tokens.verify(token)


def test_verify_accepts_a_hand_built_token(tokens: Tokens) -> None:
    user_id = uuid.uuid4()
    claims = good_claims(str(user_id))
    assert tokens.verify(hand_jwt(HS256, claims, SECRET)) == Claims(
        user_id, uuid.UUID(str(claims["sid"])), float(str(claims["exp"])))


def test_any_listed_key_verifies_and_the_first_signs() -> None:
    """Rotation: a token of the old key works while the old key is listed, not after."""
    old = Tokens((("k1", SECRET),), ttl_s=TTL).issue(uuid.uuid4(), uuid.uuid4())
    both = Tokens((("k2", OTHER_SECRET), ("k1", SECRET)), ttl_s=TTL)
    assert both.verify(old).expires_at > time.time()
    assert jwt.get_unverified_header(both.issue(uuid.uuid4(), uuid.uuid4()))["kid"] == "k2"
    with pytest.raises(Unauthenticated, match="not valid"):
        Tokens((("k2", OTHER_SECRET),), ttl_s=TTL).verify(old)


def test_disabled_users_and_ended_sessions_are_refused() -> None:
    disabled: set[uuid.UUID] = set()
    ended: set[uuid.UUID] = set()
    tokens = Tokens(KEYS, ttl_s=TTL, disabled=disabled, ended=ended)
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    token = tokens.issue(user_id, session_id)
    tokens.verify(token)
    ended.add(session_id)
    with pytest.raises(Unauthenticated, match="the session has ended"):
        tokens.verify(token)
    ended.clear()
    disabled.add(user_id)
    with pytest.raises(Unauthenticated, match="disabled"):
        tokens.verify(token)


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Bearer    ",
                                           "Basic abc", "Token abc", "abc"])
def test_user_from_header_refuses_malformed_headers(
    tokens: Tokens, authorization: str | None
) -> None:
    with pytest.raises(Unauthenticated):
        tokens.user_from_header(authorization)


@pytest.mark.parametrize("template", ["Bearer {}", "bearer {}", "Bearer  {} "])
def test_user_from_header_reads_the_bearer_token(tokens: Tokens, template: str) -> None:
    user_id = uuid.uuid4()
    token = tokens.issue(user_id, uuid.uuid4())
    assert tokens.user_from_header(template.format(token)) == user_id
