"""Bus events (docs/protocol.md, "Bus events"): `character.created` on core NATS with its
documented payload; `user.registered` in the JetStream stream USERS with Nats-Msg-Id =
userId; exactly-once delivery through the outbox across a NATS outage; and JetStream
dropping an outbox row relayed twice; and the parser of `user.registered` (a property
test: whatever the bytes, an event or a MalformedEvent whose reason repeats no value).

Rules: real NATS with JetStream and real Postgres (no mocks). Streams are read back
message by message and counted by their Nats-Msg-Id header, so a duplicate cannot hide.
Nothing waits by sleeping: arrivals are awaited under `trio.fail_after` or polled in
bounded loops that fail with a message. The NATS outage test restarts NATS in `finally`.
"""

from __future__ import annotations

import uuid
from collections import Counter

import asyncpg
import httpx
import orjson
import pytest
import trio
import trio_asyncio
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from bus import subjects
from bus.events import MalformedEvent, parse_combat_killed, parse_user_registered
from persistence.outbox import OutboxEvent, add_event
from server.devstack import DevStack
from server.process import Running
from tests.helpers import bearer, eventually, register, unique_name, use_api_loop


async def connected_bus(api: Running) -> None:
    with trio.fail_after(10):
        await api.services.bus.connected_once.wait()


async def _read_stream(nc: NatsClient, stream: str) -> list[tuple[str | None, str, bytes]]:
    """(Nats-Msg-Id, subject, data) of every message in `stream`; asyncio side."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    found = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            found.append(((msg.headers or {}).get("Nats-Msg-Id"), msg.subject or "",
                          msg.data or b""))
    return found


async def stream_messages(api: Running, stream: str) -> list[tuple[str | None, str, bytes]]:
    return await trio_asyncio.aio_as_trio(_read_stream)(api.services.bus._nc, stream)


async def msg_id_counts(api: Running, stream: str) -> Counter[str | None]:
    return Counter(msg_id for msg_id, _, _ in await stream_messages(api, stream))


async def _outbox_msg_ids(conn: asyncpg.Connection, msg_ids: list[str]) -> set[str]:
    rows = await conn.fetch("SELECT msg_id FROM outbox.events WHERE msg_id = ANY($1::text[])",
                            msg_ids)
    return {r["msg_id"] for r in rows}


async def outbox_holds(api: Running, msg_ids: list[str]) -> set[str]:
    return await api.services.pg.transact(_outbox_msg_ids, msg_ids)


async def test_character_created_is_published(
    api: Running, client: httpx.AsyncClient
) -> None:
    use_api_loop(api)
    await connected_bus(api)
    user = await register(client)
    async with api.services.bus.subscription(subjects.CHARACTER_CREATED) as messages:
        response = await client.post("/v1/characters", json={"name": "Herald", "class": "medic"},
                                     headers=bearer(user["token"]))
        assert response.status_code == 201, response.text
        character = response.json()
        with trio.fail_after(10):
            async for msg in messages:
                payload = orjson.loads(msg.data)
                if payload.get("character_id") == character["id"]:
                    break
    assert msg.subject == "character.created"
    assert (msg.headers or {}).get("Nats-Msg-Id") == character["id"]
    assert payload == {
        "character_id": character["id"], "user_id": user["user_id"], "name": "Herald",
        "class": "medic", "zone_id": character["zone_id"], "x": 0.0, "y": 0.0,
        "created_at": character["created_at"],
    }


async def test_user_registered_lands_in_users_stream(
    api: Running, client: httpx.AsyncClient
) -> None:
    use_api_loop(api)
    await connected_bus(api)
    username = unique_name("Ev")
    response = await client.post("/v1/auth/register", json={
        "username": username, "email": f"{username}.Mixed@Example.COM", "password": "long enough"})
    assert response.status_code == 201, response.text
    user_id = response.json()["user_id"]

    async def relayed() -> bool:
        return not await outbox_holds(api, [user_id])

    await eventually(relayed, "the relay to send user.registered")
    mine = [(subject, data) for msg_id, subject, data in await stream_messages(api, "USERS")
            if msg_id == user_id]
    assert len(mine) == 1, mine
    subject, data = mine[0]
    assert subject == "user.registered"
    payload = orjson.loads(data)
    assert set(payload) == {"userId", "username", "email", "registrationTimestamp"}
    assert payload["userId"] == user_id
    assert payload["username"] == username
    assert payload["email"] == f"{username.lower()}.mixed@example.com"
    assert payload["registrationTimestamp"].endswith("Z")


async def test_events_survive_a_nats_outage_exactly_once(
    stack: DevStack, api: Running, client: httpx.AsyncClient
) -> None:
    use_api_loop(api)
    await connected_bus(api)
    # Warm the relay up first, so the outage hits it mid-life (streams already ensured).
    warm_up = (await register(client))["user_id"]

    async def warmed_up() -> bool:
        return not await outbox_holds(api, [warm_up])

    await eventually(warmed_up, "the relay to send the warm-up event")
    user_ids: list[str] = []
    character_ids: list[str] = []
    stack.nats.stop()
    try:
        for i in range(10):
            user = await register(client)
            user_ids.append(user["user_id"])
            response = await client.post("/v1/characters", json={"name": f"Outage {i}"},
                                         headers=bearer(user["token"]))
            assert response.status_code == 201, response.text
            character_ids.append(response.json()["id"])

        async def nats_not_ready() -> bool:
            ready = await client.get("/readyz")
            return ready.status_code == 503 and ready.json()["checks"] == {
                "postgres": True, "redis": True, "nats": False}

        await eventually(nats_not_ready, "/readyz to report nats down")
        assert await outbox_holds(api, user_ids + character_ids), "events wait in the outbox"
    finally:
        stack.nats.start()

    async def all_relayed() -> bool:
        return not await outbox_holds(api, user_ids + character_ids)

    await eventually(all_relayed, "the outbox to drain after NATS came back", tries=200)
    users = await msg_id_counts(api, "USERS")
    characters = await msg_id_counts(api, "CHARACTERS")
    assert {u: users[u] for u in user_ids} == dict.fromkeys(user_ids, 1)
    assert {c: characters[c] for c in character_ids} == dict.fromkeys(character_ids, 1)
    assert (await client.get("/readyz")).status_code == 200


async def test_relay_drops_duplicate_outbox_rows(api: Running) -> None:
    use_api_loop(api)
    await connected_bus(api)
    user_id = str(uuid.uuid4())
    event = OutboxEvent(subjects.USER_REGISTERED, user_id, orjson.dumps({
        "userId": user_id, "username": unique_name("dup"), "email": "dup@example.com",
        "registrationTimestamp": "2024-01-01T00:00:00Z"}))

    async def add_twice(conn: asyncpg.Connection) -> None:
        await add_event(conn, event)
        await add_event(conn, event)

    async def relayed() -> bool:
        return not await outbox_holds(api, [user_id])

    # Both copies in one batch...
    await api.services.pg.transact(add_twice)
    api.services.relay.wake()
    await eventually(relayed, "the relay to drain both copies")
    assert (await msg_id_counts(api, "USERS"))[user_id] == 1

    # ...and a copy re-sent after the first was acknowledged (as after a crash
    # between JetStream's ack and the outbox delete).
    await api.services.pg.transact(add_event, event)
    api.services.relay.wake()
    await eventually(relayed, "the relay to drain the re-sent copy")
    assert (await msg_id_counts(api, "USERS"))[user_id] == 1


@pytest.mark.parametrize("fields", [
    {"username": "x" * 200_000},  # oversized: over EVENT_MAX_BYTES
    {"username": "y" * 33},  # a username registration refuses
    {"username": "no spaces"},
    {"email": "not-an-address"},
    {"email": f"{'e' * 250}@example.com"},
])
def test_a_user_registered_that_registration_would_refuse_is_malformed(
    fields: dict[str, str],
) -> None:
    """Found by the fault suite: such events were provisioned, not dead-lettered."""
    payload = {"userId": str(uuid.uuid4()), "username": "ada_99", "email": "ada@example.com",
               "registrationTimestamp": "2026-01-01T00:00:00Z", **fields}
    with pytest.raises(MalformedEvent):
        parse_user_registered(orjson.dumps(payload))
    good = parse_user_registered(orjson.dumps({**payload, "username": "ada_99",
                                               "email": "ada@example.com"}))
    assert good.username == "ada_99"


# Values marked so that a reason repeating one is seen: in a valid event, one field made
# wrong (so that every check is reached), or anything at all.
MARK = "\u2603"
_MARKED = st.text(max_size=30).map(lambda text: MARK + text)
_WRONG = st.one_of(_MARKED, st.integers(-(2**63), 2**63 - 1), st.none(),
                   st.lists(_MARKED, max_size=2))
_VALID = {"userId": str(uuid.uuid4()), "username": "ada_99", "email": "ada@example.com",
          "registrationTimestamp": "2026-01-01T00:00:00Z"}
_PAYLOADS = st.one_of(
    st.tuples(st.sampled_from(sorted(_VALID)), _WRONG).map(
        lambda wrong: orjson.dumps({**_VALID, wrong[0]: wrong[1]})),
    st.dictionaries(st.sampled_from([*_VALID, MARK + "other"]), _WRONG).map(orjson.dumps),
    st.binary(max_size=200),
)


@given(_PAYLOADS)
def test_a_malformed_user_registered_is_refused_without_repeating_its_values(
    data: bytes,
) -> None:
    """The reason is logged (bus/consumer.py): it must not carry an email or a username."""
    try:
        event = parse_user_registered(data)
    except MalformedEvent as exc:
        assert MARK not in str(exc), str(exc)
    else:
        assert MARK not in event.username + event.email


_KILL = {"event_id": str(uuid.uuid4()), "zone_id": "z1", "tick": 7, "weapon": "pistol",
         "killer_user_id": str(uuid.uuid4()), "killer_character_id": str(uuid.uuid4()),
         "victim_user_id": str(uuid.uuid4()), "victim_character_id": str(uuid.uuid4())}
_KILLS = st.one_of(
    st.tuples(st.sampled_from(sorted(_KILL)), _WRONG).map(
        lambda wrong: orjson.dumps({**_KILL, wrong[0]: wrong[1]})),
    st.dictionaries(st.sampled_from(sorted(_KILL)), st.one_of(_WRONG, st.uuids().map(str)))
    .map(orjson.dumps),
    st.binary(max_size=200),
)


@given(_KILLS)
def test_a_combat_killed_is_read_only_with_its_ids_or_refused(data: bytes) -> None:
    """What the kill counters read of a `combat.killed` is three UUIDs: anything else is
    MalformedEvent (a dead letter), never another error in the consumer."""
    try:
        event = parse_combat_killed(data)
    except MalformedEvent as exc:
        assert MARK not in str(exc), str(exc)
    else:
        payload = orjson.loads(data)
        assert (str(event.event_id), str(event.killer_user_id), str(event.victim_user_id)) \
            == (payload["event_id"], payload["killer_user_id"], payload["victim_user_id"])
