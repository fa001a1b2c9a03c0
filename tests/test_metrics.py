"""GET /metrics (docs/operations.md): after a short session each metric is there and has
moved the way the session moved it; processes without an API serve it on METRICS_PORT."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import httpx
import orjson
import trio

from bench.rawws import client_frame
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
from tests.world import connect, joined, new_player, raw_upgrade, send, snapshot_with, ws_url

CONSUMERS = ("player-service", "character-service", "progression-service", "building-service")


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

        # HTTP: a registration, a character, a refused login, a list read twice.
        player = await new_player(http)
        refused = await http.post("/v1/auth/login", json={
            "username": player["username"], "password": "not the password"})
        assert refused.status_code == 401
        headers = bearer(player["token"])

        async def provisioned() -> bool:  # the character service's default character too
            listed = await http.get("/v1/characters", headers=headers)
            return len(listed.json()["characters"]) == 2

        await eventually(provisioned, "the default character")
        for _ in range(2):  # the last of these reads is a hit: the one before filled it
            assert (await http.get("/v1/characters", headers=headers)).status_code == 200

        # A poison event: every consumer dead-letters it.
        use_api_loop(running)
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
            await trio.sleep(0.5)
            await raw.send_all(b"".join(client_frame(orjson.dumps(
                {"type": "move", "dx": 0.1, "dy": 0, "seq": n})) for n in range(2, 42)))
            await trio.sleep(0.5)

        async def settled() -> Samples | None:
            after = await scrape(http, "/metrics")
            done = (at(after, "outpost_zone_players", zone=zone) == 0
                    and at(after, "outpost_ws_sessions") == 0
                    and all(at(after, "outpost_consumer_dead_letters_total", consumer=c)
                            > at(before, "outpost_consumer_dead_letters_total", consumer=c)
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
    assert moved("outpost_zone_ticks_skipped_total", zone=zone) >= 0
    assert at(during, "outpost_zone_players", zone=zone) == 1
    assert at(after, "outpost_zone_players", zone=zone) == 0
    # 1 move, then 40 at once: 16 queue (the rest are dropped) and are applied 4 a tick.
    assert moved("outpost_zone_inputs_total", zone=zone, result="applied") == 17
    assert moved("outpost_zone_inputs_total", zone=zone, result="dropped") == 24
    assert moved("outpost_zone_snapshots_total", zone=zone, result="sent") > 0
    assert moved("outpost_zone_snapshots_total", zone=zone, result="skipped") >= 0
    # The world's sockets: two sessions, one closed by the client (1000), one dropped.
    assert at(during, "outpost_ws_sessions") == at(before, "outpost_ws_sessions") + 1
    assert moved("outpost_ws_closes_total", code="1000") == 1
    assert moved("outpost_ws_closes_total", code="1006") == 1
    assert moved("outpost_ws_bytes_sent_total") > 0
    # HTTP, by route and status.
    assert moved("outpost_http_requests_total", route="/v1/auth/register", status="201") == 1
    assert moved("outpost_http_requests_total", route="/v1/auth/login", status="401") == 1
    assert moved("outpost_http_requests_total", route="/v1/characters", status="201") == 1
    assert moved("outpost_http_request_seconds_count", route="/v1/auth/login") == 1
    assert moved("outpost_http_request_seconds_bucket", route="/v1/auth/login", le="+Inf") == 1
    # The cache: misses fill it, the last read hit it, Redis never failed.
    assert moved("outpost_cache_requests_total", result="hit") >= 1
    assert moved("outpost_cache_requests_total", result="miss") >= 1
    assert moved("outpost_cache_requests_total", result="error") == 0
    # The outbox drained; every consumer dead-lettered the poison and holds nothing.
    assert at(after, "outpost_outbox_oldest_seconds") == 0
    assert moved("outpost_outbox_relayed_total") >= 2  # user.registered, character.created
    for consumer in CONSUMERS:
        assert moved("outpost_consumer_dead_letters_total", consumer=consumer) == 1
        assert moved("outpost_consumer_redelivered_total", consumer=consumer) == 0
        assert at(after, "outpost_consumer_pending", consumer=consumer) >= 0


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

        zone_url = zone_process.metrics_url

        async def ticking() -> bool:
            samples = await scrape(http, zone_url)
            return at(samples, "outpost_zone_tick_seconds_count", zone=zone) > 0

        await eventually(ticking, f"zone {zone} ticking in its /metrics")
        samples = await scrape(http, provisioner.metrics_url)
        for consumer in CONSUMERS:
            assert at(samples, "outpost_consumer_pending", consumer=consumer) >= 0

