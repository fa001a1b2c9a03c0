"""GET /metrics (docs/operations.md): after a short session each metric is there and has
moved the way the session moved it; processes without an API serve it on METRICS_PORT, and
an api given METRICS_PORT serves it there and no longer on its public port.

Rules: each count is read before and after what moves it, and checked for exactly what
that did where the test controls all of it; a bound where something else may add to it
(the backlog of the session's shared streams, ticks a busy machine makes the zone skip).
Waits are on the condition (a message on the socket, a count in /metrics), never a sleep.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import httpx
import orjson
import trio

from bench.rawws import client_frame, received_until
from bus.subjects import USER_REGISTERED
from persistence.outbox import OutboxEvent
from server.config import Settings
from server.process import Roles
from tests.helpers import (
    Samples,
    at,
    bearer,
    eventually,
    running_process,
    scrape,
    use_api_loop,
)
from tests.processes import process_env, started
from tests.provisioned import drained
from tests.world import connect, joined, new_player, raw_upgrade, send, snapshot_with, ws_url

CONSUMERS = ("player-service", "character-service", "progression-service", "building-service")
STALL_S = 0.5  # the whole process blocked, as a long GC pause or a CPU hog would do


async def test_a_short_session_moves_every_metric(
    settings: Settings, nursery: trio.Nursery
) -> None:
    zone = f"m{uuid.uuid4().hex[:6]}"
    roles = Roles(http=True, provisioner=True, zones=(zone,))
    async with (running_process(dataclasses.replace(settings, world_zone_id=zone), nursery,
                                roles) as running,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http):
        assert running.metrics_url == running.url + "/metrics"
        before = await scrape(http, "/metrics")
        assert at(before, "outpost_process_info", role=f"api+provisioner+zone-{zone}") == 1

        # HTTP: a registration, two characters, a refused login, lists read.
        player = await new_player(http)
        refused = await http.post("/v1/auth/login", json={
            "username": player["username"], "password": "not the password"})
        assert refused.status_code == 401
        headers = bearer(player["token"])

        async def provisioned() -> bool:  # the character service's default character too
            listed = await http.get("/v1/characters", headers=headers)
            return len(listed.json()["characters"]) == 2

        await eventually(provisioned, "the default character")
        use_api_loop(running)
        # Once the consumers have settled their messages nothing but this test writes the
        # player's list: a write drops it from the cache, the next read misses (and fills
        # it), the one after hits.
        await eventually(lambda: drained(running), "the provisioning consumers to settle",
                         tries=300)
        second = await http.post("/v1/characters", json={"name": "Second"}, headers=headers)
        assert second.status_code == 201, second.text
        cache_before = await scrape(http, "/metrics")
        for _ in range(2):
            assert (await http.get("/v1/characters", headers=headers)).status_code == 200
        cache_after = await scrape(http, "/metrics")

        # A poison event: every consumer dead-letters it.
        poison = OutboxEvent(USER_REGISTERED, uuid.uuid4().hex, b"{not json")
        assert await running.services.bus.publish_persistent([poison]) == [True]

        # The world: join, a burst of moves (more than a character may queue), leave.
        character_id = player["character"]["id"]
        async with connect(ws_url(running.url, player["token"])) as conn:
            await joined(conn, character_id)
            during = await scrape(http, "/metrics")
            await send(conn, {"type": "move", "dx": 1, "dy": 0, "seq": 1})
            await snapshot_with(conn, character_id, lambda me: me["seq"] == 1)
            await conn.aclose()  # a goodbye (1000), answered in kind
        raw, _ = await raw_upgrade(running.url, player["token"])
        async with raw:  # many moves in one write: they land before a tick can take one
            await raw.send_all(client_frame(orjson.dumps(
                {"type": "join", "character_id": character_id})))
            await received_until(raw, b'"type":"welcome"')  # in the zone: moves count now
            await raw.send_all(b"".join(client_frame(orjson.dumps(
                {"type": "move", "dx": 0.1, "dy": 0, "seq": n})) for n in range(2, 42)))
            # The 16 that queued (seq 2 to 17) are applied, 4 a tick, before it goes.
            await received_until(raw, b'"seq":17')

        # The zone skips the ticks a stall made it miss, rather than burst to catch up
        # (zones/actor.py). Its next tick was due at most a period after the stall began,
        # so it wakes at least STALL_S less two periods behind, and skips that many.
        tick_rate = running.services.world.zones[zone].tick_rate_hz
        time.sleep(STALL_S)  # noqa: ASYNC251  (blocking the event loop is the fault here)

        async def settled() -> Samples | None:
            after = await scrape(http, "/metrics")
            done = (at(after, "outpost_zone_players", zone=zone) == 0
                    and at(after, "outpost_ws_sessions") == 0
                    and all(at(after, "outpost_consumer_dead_letters_total", consumer=c)
                            > at(before, "outpost_consumer_dead_letters_total", consumer=c)
                            # and holds nothing (as JetStream last told it)
                            and at(after, "outpost_consumer_pending", consumer=c) == 0
                            for c in CONSUMERS)
                    and at(after, "outpost_outbox_pending") == 0)
            return after if done else None

        after = await eventually(settled, "the session's end in /metrics")
        assert isinstance(after, dict)

    def moved(name: str, **labels: str) -> float:
        return at(after, name, **labels) - before.get((name, frozenset(labels.items())), 0)

    # Zones.
    assert moved("outpost_zone_tick_seconds_count", zone=zone) > 0
    assert moved("outpost_zone_tick_seconds_sum", zone=zone) > 0
    assert moved("outpost_zone_tick_seconds_bucket", zone=zone, le="+Inf") == moved(
        "outpost_zone_tick_seconds_count", zone=zone)
    assert moved("outpost_zone_ticks_skipped_total", zone=zone) >= int(
        (STALL_S - 2 / tick_rate) * tick_rate) - 1  # float division may round one down
    assert at(during, "outpost_zone_players", zone=zone) == 1
    assert at(after, "outpost_zone_players", zone=zone) == 0
    # 1 move, then 40 at once: 16 queue (the rest are dropped) and are applied 4 a tick.
    assert moved("outpost_zone_inputs_total", zone=zone, result="applied") == 17
    assert moved("outpost_zone_inputs_total", zone=zone, result="dropped") == 24
    assert moved("outpost_zone_snapshots_total", zone=zone, result="sent") > 0
    # Nobody here fell behind: a snapshot of one player is a few hundred bytes, and a
    # socket's buffers hold far more than this session sent (test_outlet.py counts skips).
    assert moved("outpost_zone_snapshots_total", zone=zone, result="skipped") == 0
    # The world's sockets: two sessions, one closed by the client (1000), one dropped.
    assert at(during, "outpost_ws_sessions") == at(before, "outpost_ws_sessions") + 1
    assert moved("outpost_ws_closes_total", code="1000") == 1
    assert moved("outpost_ws_closes_total", code="1006") == 1
    assert moved("outpost_ws_bytes_sent_total") > 0
    # HTTP, by route and status.
    assert moved("outpost_http_requests_total", route="/v1/auth/register", status="201") == 1
    assert moved("outpost_http_requests_total", route="/v1/auth/login", status="401") == 1
    assert moved("outpost_http_requests_total", route="/v1/characters", status="201") == 2
    assert moved("outpost_http_request_seconds_count", route="/v1/auth/login") == 1
    assert moved("outpost_http_request_seconds_bucket", route="/v1/auth/login", le="+Inf") == 1
    # The cache: the two reads after the write missed once and hit once; Redis never
    # failed.
    assert {result: at(cache_after, "outpost_cache_requests_total", result=result)
            - at(cache_before, "outpost_cache_requests_total", result=result)
            for result in ("hit", "miss", "error")} == {"hit": 1, "miss": 1, "error": 0}
    assert moved("outpost_cache_requests_total", result="error") == 0
    # The outbox drained; at least this session's user.registered and its three
    # character.created (two of the player's, the default one) were relayed by this
    # process (more if the session's earlier tests left users to provision).
    assert at(after, "outpost_outbox_oldest_seconds") == 0
    assert moved("outpost_outbox_relayed_total") >= 4
    # Every consumer dead-lettered the poison and holds nothing (`settled` waited for its
    # pending to be 0). The consumers are the session's, durable and shared: what an
    # earlier test's process left unsettled may come to this one, dead-lettered or
    # redelivered (a fresh clone's run once saw a redelivery here); so a bound, and the
    # redeliveries only listed (tests/faults/test_registrations.py counts them exactly).
    for consumer in CONSUMERS:
        assert moved("outpost_consumer_dead_letters_total", consumer=consumer) >= 1
        assert ("outpost_consumer_redelivered_total",
                frozenset({("consumer", consumer)})) in after


async def test_processes_without_an_api_serve_metrics_on_their_own_port(
    settings: Settings, tmp_path: Path
) -> None:
    zone = f"m{uuid.uuid4().hex[:6]}"
    env = process_env(settings, METRICS_PORT="0")
    async with (started(tmp_path, "zone", zone, env=env) as zone_process,
                started(tmp_path, "provisioner", env=env) as provisioner,
                httpx.AsyncClient(timeout=10) as http):
        for process, role in ((zone_process, f"zone-{zone}"), (provisioner, "provisioner")):
            url = process.metrics_url
            assert url.endswith("/metrics"), process.banner
            samples = await scrape(http, url)
            assert at(samples, "outpost_process_info", role=role) == 1
            assert at(samples, "process_open_fds") > 0
            assert (await http.get(url.removesuffix("/metrics") + "/healthz")).status_code == 200
            # Any other path: the API's error shape (docs/protocol.md), not Quart's HTML.
            missing = await http.get(url.removesuffix("/metrics") + "/nothing-here")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/json"
            assert missing.json()["error"]["code"] == "not_found", missing.text
            posted = await http.post(url)
            assert (posted.status_code, posted.json()["error"]["code"]) == (
                405, "method_not_allowed")

        zone_url = zone_process.metrics_url

        async def ticking() -> bool:
            samples = await scrape(http, zone_url)
            return at(samples, "outpost_zone_tick_seconds_count", zone=zone) > 0

        await eventually(ticking, f"zone {zone} ticking in its /metrics")

        async def caught_up() -> bool:  # what the session's streams held, provisioned
            samples = await scrape(http, provisioner.metrics_url)
            return all(at(samples, "outpost_consumer_pending", consumer=consumer) == 0
                       for consumer in CONSUMERS)

        await eventually(caught_up, "the provisioner's consumers to report nothing pending",
                         tries=300)



async def test_an_api_given_metrics_port_serves_them_there_only(
    settings: Settings, tmp_path: Path
) -> None:
    async with (started(tmp_path, "api", env=process_env(settings, METRICS_PORT="0")) as api,
                httpx.AsyncClient(timeout=10) as http):
        assert api.metrics_url != api.url + "/metrics", api.banner
        samples = await scrape(http, api.metrics_url)
        assert at(samples, "outpost_process_info", role="api") == 1
        assert (await http.get(api.metrics_url.removesuffix("/metrics") + "/healthz")
                ).status_code == 200
        hidden = await http.get(api.url + "/metrics")  # the public port: not there
        assert hidden.status_code == 404
        assert hidden.json()["error"]["code"] == "not_found", hidden.text
        assert (await http.get(api.url + "/healthz")).status_code == 200
