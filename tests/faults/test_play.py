"""Fault scenarios during play (issue 13's table: Postgres down during play, zone killed
and stopped, api killed, slow and silent readers, floods and bad frames, token expiry
in play).

200 players (bench/world_swarm.py in its own process, tests/faults/play.py) play zone
z1 through an `outpost api` process while the zone runs in an `outpost zone z1`
process, as operators run them. The swarm's ledger holds every position a snapshot
acknowledged to each player, and every welcome; after each fault, Postgres is
compared with it.

Rules: the fault suite's durable services (tests/faults/conftest.py); an in-process
observer (no roles) reads Postgres; waits are bounded polls.
"""

from __future__ import annotations

import math
import signal
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import trio
from trio_websocket import ConnectionClosed

from auth.tokens import Tokens
from bench import v2
from bench.rawws import client_frame, close_of, frame_at, received_until
from server.config import Settings
from server.devstack import DevStack
from server.ws import codec
from tests.faults.ledger import Figures, record
from tests.faults.play import (
    CHECKPOINT_S,
    PLAYERS,
    RATE_FLOOR,
    SAVE_SLACK_S,
    SLOW_CLOSE_S,
    ZONE,
    assert_undisturbed,
    playing,
    shown,
    staler_than,
    stored,
    swarm,
    unlike_acked,
    welcomed_again,
    welcomed_elsewhere,
    world,
    zone_and_players,
)
from tests.helpers import (
    assert_error,
    bearer,
    eventually,
    metric,
    within,
)
from tests.processes import Outpost, started
from tests.world import (
    connect,
    flood,
    joined,
    leftover,
    new_player,
    raw_upgrade,
    send,
    ws_url,
)
from zones.host import REAP_EVERY_S, SILENT_AFTER_S
from zones.remote import HEARTBEAT_S

POSTGRES_DOWN_S = 10.0
TOKEN_TTL_S = 5
# From an event in a process to this test seeing it: a poll of 0.1 s, a /metrics page
# from a process the swarm keeps busy, on a machine shared with others.
NOTICE_S = 1.0
SILENT_RCVBUF = 4096  # the silent reader's receive buffer


async def test_a_zone_stopped_then_killed_during_play(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with world(settings, nursery, tmp_path) as (observer, api, env), \
            AsyncExitStack() as stack:
        first, players = await zone_and_players(stack, tmp_path, api, env)
        await trio.sleep(2)
        assert await first.stop(signal.SIGTERM) == 0
        saved_at_stop = await stored(observer)
        await trio.sleep(1)  # the players wait for their zone
        restarted = time.monotonic()
        second = await stack.enter_async_context(started(tmp_path, "zone", ZONE, env=env))
        back_in = await playing(api.url, ZONE, PLAYERS)
        await trio.sleep(3.6 * CHECKPOINT_S)  # late in a checkpoint's period
        second.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await second.process.wait()
        saved_at_kill = await stored(observer)
        ledger = await players.finished()
        await playing(api.url, ZONE, 0)  # its lease ran out: no zone left for the next test
    assert len(ledger) == PLAYERS
    not_last = unlike_acked(ledger, saved_at_stop, restarted)
    not_welcomed = welcomed_elsewhere(ledger, saved_at_stop, restarted)
    stale, stalest = staler_than(ledger, saved_at_kill, killed, CHECKPOINT_S + SAVE_SLACK_S)
    closed = [c for c, played in ledger.items() if played.close is not None]
    still = [c for c, played in ledger.items()  # else the kill -9 check would be vacuous
             if len([a for a in played.acked if restarted < a[0] < killed]) < 10]
    # The restarted zone re-joins each player once; nothing re-joins them after the kill.
    doubled = welcomed_again(ledger, restarted)
    record(Figures("zone stopped, then killed", f"{PLAYERS} players moving at 5 Hz",
                   f"SIGTERM z1, restarted; later kill -9 (checkpoint {CHECKPOINT_S:g} s)",
                   back_in, len(not_last) + len(not_welcomed) + len(stale), doubled,
                   f"SIGTERM: {PLAYERS - len(not_last)} saved at the last acked, "
                   f"{PLAYERS - len(not_welcomed)} welcomed there; kill -9: stalest "
                   f"saved position {stalest:.2f} s old; doubled: welcomes beyond one "
                   f"a player after the restart"))
    assert (not_last, not_welcomed, stale, closed, still) == ([], [], [], [], [])
    assert doubled == 0


async def test_an_api_killed_with_its_sessions(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with world(settings, nursery, tmp_path) as (observer, api, env), \
            started(tmp_path, "zone", ZONE, env=env) as zone:
        async with swarm(tmp_path, api.url, PLAYERS) as players:
            await players.ready(ZONE)
            await trio.sleep(2)
            api.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await api.process.wait()

            async def let_go() -> bool:  # the zone's own count, not a listing's copy of it
                return await metric(zone.metrics_url, "outpost_zone_players", zone=ZONE) == 0

            await eventually(let_go, "the zone to let the killed api's players go",
                             tries=int(10 * 2 * SILENT_AFTER_S))
            gone_after = time.monotonic() - killed
            ledger = await players.finished()
        async with started(tmp_path, "api", env=env) as second:
            saved = await stored(observer)
            async with swarm(tmp_path, second.url, PLAYERS, users=players.users) as again:
                await again.ready(ZONE)
                rejoined = await again.finished()
    # What a player was shown last, even after the kill: frames the api had sent were
    # still on their way.
    at_last_ack = [c for c, p in ledger.items()
                   if (last := p.last_acked(math.inf)) is not None and shown(saved[c]) == last[2:]]
    # Else the zone applied moves whose snapshots died with the api: newer, not lost.
    newer = [c for c, p in ledger.items() if c not in at_last_ack
             and p.current_until(saved[c]) is None
             and (last := p.last_acked(math.inf)) is not None and p.sent > last[1]]
    older = [c for c in ledger if c not in at_last_ack and c not in newer]
    not_welcomed = welcomed_elsewhere(rejoined, saved, 0.0)
    doubled = welcomed_again(rejoined)  # each joins once through the new api
    reset = sum(p.close == "1006" for p in ledger.values())
    record(Figures("api killed", f"{PLAYERS} players moving at 5 Hz",
                   "kill -9 the api process; a new api, the players reconnect", gone_after,
                   len(older) + len(not_welcomed), doubled,
                   f"the zone let them go {gone_after:.1f} s after the kill (silent api: "
                   f"{SILENT_AFTER_S:g} s); saved at the last acked {len(at_last_ack)}, at a "
                   f"later move {len(newer)}; {PLAYERS - len(not_welcomed)} welcomed there; "
                   f"{reset} sockets reset; doubled: welcomes beyond one a player"))
    assert (older, not_welcomed) == ([], [])
    assert doubled == 0
    # The zone's rule for the members of an api that fell silent (zones/host.py): they
    # leave once it has sent nothing for SILENT_AFTER_S, checked every REAP_EVERY_S. The
    # api sent something at least every HEARTBEAT_S until it died, so no earlier than
    # SILENT_AFTER_S - HEARTBEAT_S after the kill, and no later than SILENT_AFTER_S +
    # REAP_EVERY_S, plus NOTICE_S to see it.
    assert SILENT_AFTER_S - HEARTBEAT_S <= gone_after <= \
        SILENT_AFTER_S + REAP_EVERY_S + NOTICE_S, gone_after


async def _closes(url: str, code: int) -> float:
    return await metric(f"{url}/metrics", "outpost_ws_closes_total", code=str(code))


async def _first_snapshot(stream: trio.SocketStream, buffered: bytes) -> int:
    """Read the server's frames up to the first whole snapshot; its size in bytes."""
    data = bytearray(buffered)
    with trio.fail_after(10):
        while True:
            offset = 0
            while (frame := frame_at(data, offset)) is not None:
                _, start, end = frame
                if orjson.loads(data[start:end])["type"] == "snapshot":
                    return end - start
                offset = end
            del data[:offset]
            data += await stream.receive_some(65536)


def _falling_behind_s(snapshot_bytes: int, send_buffer: int, tick_rate_hz: float) -> float:
    """The longest a reader that reads nothing takes to fall behind (server/ws/outlet.py):
    until the api's write to it falls short, once the kernel's buffers between them are
    full: the api's send buffer (WORLD_SEND_BUFFER, which the kernel doubles) and the
    reader's receive buffer (twice what it asked for). Its snapshots list the same
    players each tick, their sizes a few digits apart (10 %)."""
    return 2 * (send_buffer + SILENT_RCVBUF) / (0.9 * snapshot_bytes * tick_rate_hz)


async def test_a_silent_reader_among_200(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with world(settings, nursery, tmp_path) as (_, api, env), \
            started(tmp_path, "zone", ZONE, env=env), \
            swarm(tmp_path, api.url, PLAYERS) as players, \
            httpx.AsyncClient(base_url=api.url) as http:
        silent = await new_player(http, "Silent")
        await players.ready(ZONE)
        rss_before = psutil.Process(api.process.pid).memory_info().rss
        dropped_before = await _closes(api.url, 1006)

        async def dropped_now() -> bool:  # counted the moment the outlet gives up
            return await _closes(api.url, 1006) > dropped_before

        asked_at = time.monotonic()  # it cannot be behind before it asked to join
        stream, head = await raw_upgrade(api.url, silent["token"], rcvbuf=SILENT_RCVBUF)
        async with stream:
            assert head.startswith(b"HTTP/1.1 101"), head
            await stream.send_all(client_frame(orjson.dumps(
                {"type": "join", "character_id": silent["character"]["id"]})))
            snapshot_bytes = await _first_snapshot(stream, leftover(head))
            joined_at = time.monotonic()  # from now on it reads nothing
            falling_s = _falling_behind_s(snapshot_bytes, settings.world_send_buffer_bytes,
                                          settings.world_tick_rate_hz)
            bound_s = SLOW_CLOSE_S + falling_s + NOTICE_S
            async with trio.open_nursery() as watching:
                watching.start_soon(playing, api.url, ZONE, PLAYERS + 1)  # it was in
                await eventually(dropped_now, "the silent reader to be dropped",
                                 tries=int(10 * bound_s) + 10)
            dropped_at = time.monotonic()
            await playing(api.url, ZONE, PLAYERS)  # and it left the zone
            left_after = time.monotonic() - joined_at
            await trio.sleep(2)  # the others, after
            rss_after = psutil.Process(api.process.pid).memory_info().rss
            dropped = await _closes(api.url, 1006) - dropped_before
        ledger = await players.finished()
        report = players.report
    rates, p99 = report["snapshots_per_s_per_client"], report["input_latency"]["p99_ms"]
    grown_mb = (rss_after - rss_before) / 2**20
    dropped_after = dropped_at - joined_at
    record(Figures("slow and silent readers", f"{PLAYERS} players moving at 5 Hz",
                   "1 more that never reads (4 KB receive buffer)", dropped_after, None, None,
                   f"dropped after {dropped_after:.1f} s (WORLD_SLOW_CLOSE {SLOW_CLOSE_S:g} s "
                   f"once the kernel's buffers hold no more of its {snapshot_bytes / 1000:.0f}"
                   f" KB snapshots: up to {falling_s:.1f} s; bound {bound_s:.1f} s), out of "
                   f"the zone after {left_after:.1f} s; others' snapshots/s min "
                   f"{rates['min']}, latency p99 {p99} ms; api memory {grown_mb:+.1f} MB"))
    assert dropped == 1  # the silent one, without a close frame: there is no room for one
    # The outlet drops a reader that stayed behind for WORLD_SLOW_CLOSE, at the first tick
    # after that (server/ws/outlet.py): never before, since it could not be behind before
    # it joined; and no later than it takes to get behind, plus NOTICE_S.
    assert dropped_at - asked_at >= SLOW_CLOSE_S, dropped_at - asked_at
    assert dropped_after <= bound_s, (dropped_after, bound_s)
    assert_undisturbed(report, ledger)
    assert grown_mb < 20, grown_mb


async def test_a_token_expiring_in_play(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    # No checkpoint in the session's life: the position is saved because it left.
    async with world(settings, nursery, tmp_path, checkpoint_s=60) as (observer, api, env), \
            started(tmp_path, "zone", ZONE, env=env), \
            swarm(tmp_path, api.url, PLAYERS) as players, \
            httpx.AsyncClient(base_url=api.url) as http:
        me = await new_player(http, "Expiring")
        character_id = me["character"]["id"]
        await players.ready(ZONE)
        short = Tokens(settings.jwt_keys, ttl_s=TOKEN_TTL_S).issue(uuid.UUID(me["user_id"]),
                                                                 uuid.uuid4())
        expires = time.time() + TOKEN_TTL_S  # to within the token's whole second
        acked: tuple[float, float] | None = None
        async with connect(ws_url(api.url, short)) as conn:
            await joined(conn, character_id)

            async def move() -> None:
                """Until a second before expiry, so that every move is acknowledged before
                the close (one in flight at the close would be applied unseen)."""
                seq = 0
                while time.time() < expires - 1.5:
                    seq += 1
                    await send(conn, {"type": "move", "dx": 0.5, "dy": -0.25, "seq": seq})
                    await trio.sleep(0.2)

            with trio.fail_after(TOKEN_TTL_S + 5):
                async with trio.open_nursery() as moving:
                    moving.start_soon(move)
                    try:
                        while True:
                            message = orjson.loads(await conn.get_message())
                            for entry in message.get("players", ()):
                                if entry["id"] == character_id and entry["seq"]:
                                    acked = (entry["x"], entry["y"])
                    except ConnectionClosed as closed:
                        code = closed.reason.code if closed.reason else None
                        late_s = time.time() - expires
                    moving.cancel_scope.cancel()
        closed_at = time.monotonic()

        async def saved_there() -> bool:
            return (await stored(observer))[character_id] == acked

        await within(saved_there, tries=100)  # the zone saves it as it leaves
        saved_s = time.monotonic() - closed_at
        saved = (await stored(observer))[character_id]
        login = await http.post("/v1/auth/login", json={"username": me["username"],
                                                         "password": me["password"]})
        assert login.status_code == 200, login.text
        async with connect(ws_url(api.url, login.json()["token"])) as conn:
            resumed = await joined(conn, character_id)
        mine = await http.get("/v1/characters", headers=bearer(login.json()["token"]))
        assert mine.status_code == 200
        ledger = await players.finished()
    at = (resumed["character"]["x"], resumed["character"]["y"])
    record(Figures("token expiry in play", f"1 player among {PLAYERS}, moving at 5 Hz",
                   f"its token expires {TOKEN_TTL_S} s into the session", saved_s,
                   int(saved != acked) + int(at != saved), None,
                   f"closed {code} {late_s:+.1f} s from expiry; saved {saved}, last acked "
                   f"{acked}; resumed at {at}"))
    assert code == 4001
    assert -1.0 <= late_s <= 1.5, late_s  # JWT times are whole seconds
    assert acked is not None and saved == acked and at == saved
    assert all(played.close is None for played in ledger.values())


async def _ticks(zone: Outpost) -> tuple[float, float]:
    """When, and how many ticks the zone process had made (its own /metrics)."""
    return time.monotonic(), await metric(zone.metrics_url, "outpost_zone_tick_seconds_count")


async def test_postgres_down_during_play(
    stack: DevStack, settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with world(settings, nursery, tmp_path) as (observer, api, env), \
            started(tmp_path, "zone", ZONE, env=env) as zone, \
            swarm(tmp_path, api.url, PLAYERS) as players, \
            httpx.AsyncClient(base_url=api.url) as http:
        me = await new_player(http, "Lister")
        await players.ready(ZONE)
        stack.postgres.stop()
        began, tick_began = await _ticks(zone)
        answers = []
        while time.monotonic() - began < POSTGRES_DOWN_S:
            asked = time.monotonic()
            response = await http.get("/v1/characters", headers=bearer(me["token"]))
            answers.append(time.monotonic() - asked)
            assert_error(response, 503, "unavailable")
            await trio.sleep(1)
        ended, tick_ended = await _ticks(zone)
        stack.postgres.start()
        back = time.monotonic()

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await eventually(ready, "the api ready again once Postgres is back", tries=300)
        recovered = time.monotonic() - back
        await players.settled()
        ledger = await players.finished()  # they leave: the zone saves each of them

        async def saved() -> bool:
            return not unlike_acked(ledger, await stored(observer), math.inf)

        await within(saved, tries=100)
        unsaved = unlike_acked(ledger, await stored(observer), math.inf)
        report = players.report
    tick_rate = (tick_ended - tick_began) / (ended - began)
    doubled = welcomed_again(ledger)  # the outage must not make the zone re-admit anyone
    record(Figures("Postgres down during play", f"{PLAYERS} players moving at 5 Hz",
                   f"Postgres stopped {POSTGRES_DOWN_S:g} s, then started", recovered,
                   len(unsaved), doubled,
                   f"ticks at {tick_rate:.1f}/s meanwhile; {len(answers)} lists answered "
                   f"503 in at most {1000 * max(answers):.0f} ms; snapshots/s min "
                   f"{report['snapshots_per_s_per_client']['min']}; "
                   f"{PLAYERS - len(unsaved)} saved at the last acked; doubled: welcomes "
                   f"beyond one a player"))
    assert tick_rate >= RATE_FLOOR, tick_rate
    assert max(answers) < settings.db_timeout_s, answers
    assert report["snapshots_per_s_per_client"]["min"] >= RATE_FLOOR, report
    assert unsaved == []
    assert doubled == 0


async def _abused(url: str, user: dict[str, Any], abuse: bytes, *, join: bool = False,
                  repeat: bool = False, flood_bytes: int | None = None,
                  wire: str = "v1") -> int | str:
    """Send `abuse` on a socket of `user`'s (joined first if `join`; with `repeat`, again
    and again for a second, or until `flood_bytes` were sent): the close code it got, or
    the error code if the socket stayed open (it then answers a ping)."""
    v2_wire = wire == "v2"
    opcode = codec.BINARY if v2_wire else codec.TEXT
    encode = v2.encode if v2_wire else orjson.dumps
    stream, head = await raw_upgrade(url, user["token"], protocol=v2.SUBPROTOCOL if v2_wire
                                     else None)
    async with stream:
        assert head.startswith(b"HTTP/1.1 101"), head
        if join:
            await stream.send_all(client_frame(encode(
                {"type": "join", "character_id": user["character"]["id"]}), opcode))
            head += await received_until(stream, b"welcome")
        if repeat:
            await flood(stream, abuse, seconds=1.0, limit_bytes=flood_bytes)
        else:
            await stream.send_all(abuse)
        if v2_wire:  # an error, not a close: then the socket still answers
            await received_until(stream, b"bad_json")
            await stream.send_all(client_frame(v2.encode({"type": "ping", "t": 1}), opcode))
            await received_until(stream, b"pong")
            return "bad_json"
        code, _ = await close_of(stream, leftover(head))
        return code


async def test_floods_and_bad_frames_among_200(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    move = client_frame(b'{"type":"move","dx":0.1,"dy":0,"seq":1}')
    huge = 2 << 20  # 2 MiB, all of it sent
    cases: dict[str, tuple[bytes, dict[str, Any], int | str]] = {  # docs/protocol.md
        "10,000 moves in 1 s": (move * 100, {"join": True, "repeat": True,
                                             "flood_bytes": 10_000 * len(move)}, 4008),
        # As fast as loopback takes them: most arrive after the 4008, and are passed over.
        "moves at full speed for 1 s": (move * 100, {"join": True, "repeat": True}, 4008),
        "a 2 MiB frame": (client_frame(b"x" * huge), {}, 4008),
        "an unfinished fragment": (client_frame(b'{"type":', fin=False)
                                   + client_frame(b'"ping"}'), {}, 1002),  # RFC 6455
        "bad UTF-8": (client_frame(b'{"type": "\xff\xfe"}'), {}, 1007),  # RFC 6455
        "bad MessagePack": (client_frame(b"\xc1\x00", codec.BINARY), {"wire": "v2"},
                            "bad_json"),
    }
    async with world(settings, nursery, tmp_path) as (_, api, env), \
            started(tmp_path, "zone", ZONE, env=env), \
            swarm(tmp_path, api.url, PLAYERS) as players, \
            httpx.AsyncClient(base_url=api.url) as http:
        abusers = [await new_player(http, f"Abuser{i}") for i in range(len(cases))]
        await players.ready(ZONE)
        got = {name: await _abused(api.url, user, abuse, **options)
               for (name, (abuse, options, _)), user in zip(cases.items(), abusers,
                                                            strict=True)}
        await trio.sleep(1)  # the others, after
        ledger = await players.finished()
        report = players.report
    expected = {name: answer for name, (_, _, answer) in cases.items()}
    wrong = {name: got[name] for name in cases if got[name] != expected[name]}
    rates, p99 = report["snapshots_per_s_per_client"], report["input_latency"]["p99_ms"]
    record(Figures("floods and bad frames", f"{PLAYERS} players moving at 5 Hz",
                   ", ".join(cases), None, None, None,
                   "; ".join(f"{name}: {answer}" for name, answer in got.items())
                   + f"; {len(wrong)} wrong; others' snapshots/s min {rates['min']}, "
                   f"latency p99 {p99} ms"))
    assert wrong == {}, wrong
    assert_undisturbed(report, ledger)


