"""New-user provisioning by choreography (docs/protocol.md, "Bus events", and GET /v1/me).

Covers: all four parts appear after a registration and the default character is the
active one; consumers down during 50 registrations catch up with each part made once;
a duplicated event (new message id) changes nothing; a consumer that fails in the
middle of a message gets it again and completes it while the other three are
unaffected; a NATS restart during a burst and a Postgres outage under the consumers
lose and double nothing; malformed events are terminated without blocking the ones
behind them, and their log lines name them by id, never by their content.

Rules: real Postgres and NATS with JetStream. Rows are counted per user straight from
Postgres; "drained" means every consumer has nothing pending and nothing awaiting an
ack, read from JetStream itself. Waits are bounded polls that fail with a message.
Fault tests restart the servers they stop in `finally`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import orjson
import pytest
import trio

from bus.provisioning import SERVICES
from bus.subjects import STREAMS
from persistence.buildings import provision_buildings
from persistence.progression import provision_progressions
from server.config import Settings
from server.devstack import DevStack
from server.process import Running
from tests.helpers import bearer, eventually, register, running_process, use_api_loop
from tests.provisioned import (
    FULL,
    PROVISIONER,
    counts,
    provisioned_exactly_once,
    publish,
    registered_users,
    user_registered,
)


@pytest.fixture
async def provisioner(settings: Settings, nursery: trio.Nursery) -> Any:
    async with running_process(settings, nursery, PROVISIONER) as running:
        use_api_loop(running)
        with trio.fail_after(10):
            await running.services.bus.connected_once.wait()
        await running.services.bus.ensure_streams(STREAMS)  # so a test may publish at once
        yield running


async def test_register_then_me_shows_all_four_parts(
    client: httpx.AsyncClient, provisioner: Running, settings: Settings
) -> None:
    user = await register(client)

    async def me() -> dict[str, Any] | None:
        response = await client.get("/v1/me", headers=bearer(user["token"]))
        assert response.status_code == 200, response.text
        body = response.json()
        parts = (body["player"], body["progression"], body["buildings"],
                 body["active_character_id"])
        return body if all(parts) and len(body["buildings"]) == 2 else None

    body = await eventually(me, "all four parts on /v1/me")
    assert isinstance(body, dict)
    assert (body["user_id"], body["username"]) == (user["user_id"], user["username"])
    assert body["email"] == f"{user['username']}@example.com"
    assert body["player"]["user_id"] == user["user_id"]
    assert body["player"]["username"] == user["username"]
    assert body["player"]["created_at"].endswith("Z")
    assert body["progression"] == {"level": 1, "xp": 0, "weapons": ["pistol"],
                                   "skills": ["sprint", "first_aid", "fortify"]}
    assert body["buildings"] == [{"kind": "hq", "level": 1}, {"kind": "warehouse", "level": 1}]

    listed = await client.get("/v1/characters", headers=bearer(user["token"]))
    assert listed.status_code == 200, listed.text
    [recruit] = listed.json()["characters"]
    assert recruit["id"] == body["active_character_id"]
    assert (recruit["name"], recruit["class"], recruit["active"]) == ("Recruit", "recruit", True)
    assert (recruit["zone_id"], recruit["x"], recruit["y"]) == (settings.world_zone_id, 0.0, 0.0)


async def test_me_before_provisioning_shows_nothing_yet(client: httpx.AsyncClient) -> None:
    user = await register(client)  # no provisioner runs in this test
    response = await client.get("/v1/me", headers=bearer(user["token"]))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "user_id": user["user_id"], "username": user["username"],
        "email": f"{user['username']}@example.com", "player": None, "progression": None,
        "buildings": [], "active_character_id": None}
    assert (await client.get("/v1/me")).status_code == 401


async def test_a_character_made_before_provisioning_keeps_its_name(
    client: httpx.AsyncClient, settings: Settings, nursery: trio.Nursery
) -> None:
    user = await register(client)
    mine = await client.post("/v1/characters", json={"name": "recruit"},
                             headers=bearer(user["token"]))
    assert mine.status_code == 201, mine.text
    async with running_process(settings, nursery, PROVISIONER) as running:
        use_api_loop(running)
        await eventually(lambda: all_provisioned_with(running, user["user_id"], characters=2),
                         "the user provisioned")
    listed = (await client.get("/v1/characters", headers=bearer(user["token"]))).json()
    assert [(c["name"], c["active"]) for c in listed["characters"]] == [
        ("recruit", False), ("Recruit 2", True)]


async def all_provisioned_with(running: Running, user_id: str, **expected: int) -> bool:
    return (await counts(running, [user_id]))[user_id] == {**FULL, **expected}


async def test_consumers_down_during_50_registrations_catch_up_once(
    client: httpx.AsyncClient, settings: Settings, nursery: trio.Nursery, api: Running
) -> None:
    user_ids = await registered_users(client, 50)
    use_api_loop(api)
    before = await counts(api, user_ids)
    assert all(c == dict.fromkeys(FULL, 0) for c in before.values()), "nothing consumes yet"

    async with running_process(settings, nursery, PROVISIONER) as running:
        use_api_loop(running)
        await provisioned_exactly_once(running, user_ids)


async def test_duplicated_event_changes_nothing(
    client: httpx.AsyncClient, provisioner: Running
) -> None:
    user = await register(client)
    await provisioned_exactly_once(provisioner, [user["user_id"]])
    for _ in range(2):
        await publish(provisioner, user_registered(user["user_id"], user["username"]),
                      msg_id=str(uuid.uuid4()))
    await provisioned_exactly_once(provisioner, [user["user_id"]])


async def test_a_consumer_failing_mid_message_gets_it_again(
    client: httpx.AsyncClient, provisioner: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = provisioner.services.pg.transact
    attempts: list[object] = []
    hung, release = trio.Event(), trio.Event()

    async def crash_after_commit(work: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(work, *args, **kwargs)
        if work is provision_buildings:
            attempts.append(args)
            if len(attempts) == 1:
                hung.set()  # committed, not yet acknowledged: now die
                await release.wait()
                raise RuntimeError("injected failure after commit")
        return result

    monkeypatch.setattr(provisioner.services.pg, "transact", crash_after_commit)
    user = await register(client)
    user_id = user["user_id"]
    with trio.fail_after(10):
        await hung.wait()

    # The building consumer is stuck on the message; the other three go on.
    async def others_done() -> bool:
        row = (await counts(provisioner, [user_id]))[user_id]
        return row["players"] == row["progressions"] == row["active"] == 1

    await eventually(others_done, "the other three consumers")
    release.set()
    await provisioned_exactly_once(provisioner, [user_id])
    assert len(attempts) == 2, "the failed message was delivered again, once"


async def test_nats_restart_during_a_registration_burst(
    stack: DevStack, client: httpx.AsyncClient, provisioner: Running
) -> None:
    user_ids: list[str] = []

    async def registered(n: int) -> bool:
        return len(user_ids) >= n

    async with trio.open_nursery() as nursery:
        nursery.start_soon(registered_users, client, 60, user_ids)
        await eventually(lambda: registered(10), "the burst to get going")
        stack.nats.stop()
        try:
            # Registrations go on with NATS down: the outbox holds their events.
            await eventually(lambda: registered(30), "registrations during the outage")
        finally:
            stack.nats.start()
    assert len(user_ids) == 60
    await provisioned_exactly_once(provisioner, user_ids)


async def test_postgres_outage_under_the_consumers_loses_nothing(
    stack: DevStack, provisioner: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bus.consumer")
    user_ids = [str(uuid.uuid4()) for _ in range(10)]

    async def held() -> bool:
        return {d for d in SERVICES
                if any(r.getMessage().startswith(f"{d}: holding") for r in caplog.records)
                } == set(SERVICES)

    stack.postgres.stop()
    try:
        for user_id in user_ids:  # as the outbox relay would, for accounts made earlier
            await publish(provisioner, user_registered(user_id), msg_id=user_id)
        await eventually(held, "every consumer to hold its message for Postgres")
    finally:
        stack.postgres.start()
    await provisioned_exactly_once(provisioner, user_ids)


async def test_malformed_events_do_not_block_the_ones_behind(
    client: httpx.AsyncClient, provisioner: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bus.consumer")
    bad = [b"not json", b"[1, 2]", b'{"userId": "not-a-uuid", "username": "x", "email": "y",'
           b' "registrationTimestamp": "2026-01-01T00:00:00Z"}',
           orjson.dumps({"userId": str(uuid.uuid4()), "username": "no_timestamp",
                         "email": "z@example.com"})]
    ids = [str(uuid.uuid4()) for _ in bad]
    for payload, msg_id in zip(bad, ids, strict=True):
        await publish(provisioner, payload, msg_id=msg_id)
    user = await register(client)
    await provisioned_exactly_once(provisioner, [user["user_id"]])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for msg_id in ids:  # each named by its id, once per consumer
        assert logged.count(f"Nats-Msg-Id {msg_id}") == len(SERVICES), (msg_id, logged)
    # Never by its content (an email, a username), raw, before any redaction.
    for leak in ("z@example.com", "no_timestamp", "not json", "not-a-uuid"):
        assert leak not in logged, leak


async def test_a_message_that_always_fails_is_dead_lettered_alone(
    provisioner: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bus.consumer")
    poison, *healthy = [str(uuid.uuid4()) for _ in range(6)]
    original = provisioner.services.pg.transact

    async def fails_for_poison(work: Any, *args: Any, **kwargs: Any) -> Any:
        if work is provision_progressions and uuid.UUID(poison) in args[0]:
            raise RuntimeError("injected: this user can never be provisioned")
        return await original(work, *args, **kwargs)

    monkeypatch.setattr(provisioner.services.pg, "transact", fails_for_poison)
    for user_id in (poison, *healthy):
        await publish(provisioner, user_registered(user_id), msg_id=user_id)
    await provisioned_exactly_once(provisioner, healthy)
    row = (await counts(provisioner, [poison]))[poison]
    assert row == {**FULL, "progressions": 0}, "only the failing consumer missed it"
    dead = [r for r in caplog.records if "dead letter after 5 attempts" in r.getMessage()]
    assert len(dead) == 1 and f"Nats-Msg-Id {poison}" in dead[0].getMessage()
    assert "sequence" in dead[0].getMessage()
    # The event's personal data is in no line of it, message or traceback, raw.
    username = orjson.loads(user_registered(poison))["username"]
    for record in caplog.records:
        line = record.getMessage()
        if record.exc_info:
            line += logging.Formatter().formatException(record.exc_info)
        assert username not in line and "@example.com" not in line, line
