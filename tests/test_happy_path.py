"""The happy path over real HTTP on loopback: register, login, create, list."""

from __future__ import annotations

import uuid

import httpx

from tests.helpers import bearer, register, unique_name


async def test_register_login_create_list(client: httpx.AsyncClient) -> None:
    user = await register(client)
    uuid.UUID(user["user_id"])

    login = await client.post("/v1/auth/login",
                              json={"username": user["username"], "password": "correct horse"})
    assert login.status_code == 200, login.text
    assert login.json()["user_id"] == user["user_id"]
    token = login.json()["token"]

    created = await client.post("/v1/characters", json={"name": "Slick Sam", "class": "scout"},
                                headers=bearer(token))
    assert created.status_code == 201, created.text
    character = created.json()
    assert character["name"] == "Slick Sam"
    assert character["class"] == "scout"
    assert character["user_id"] == user["user_id"]
    assert (character["x"], character["y"], character["active"]) == (0.0, 0.0, False)
    assert character["zone_id"] == "z1"
    assert character["created_at"].endswith("Z")

    second = await client.post("/v1/characters", json={"name": "Ölga-2"}, headers=bearer(token))
    assert second.status_code == 201, second.text
    assert second.json()["class"] == "recruit"

    listed = await client.get("/v1/characters", headers=bearer(token))
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()["characters"]] == [character["id"], second.json()["id"]]
    assert listed.json()["characters"][0] == character


async def test_login_with_email_any_case(client: httpx.AsyncClient) -> None:
    username = unique_name("Mixed")
    user = await register(client, username)
    response = await client.post("/v1/auth/login", json={
        "username": f"{username.upper()}@EXAMPLE.com", "password": "correct horse"})
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == user["user_id"]


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": True, "redis": True, "nats": True}
