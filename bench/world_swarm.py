"""World swarm: N players join one zone, move, and measure what they get back.

Registers (or reuses, from --users-file) N users with a character each, joins
them over WebSockets (trio-websocket), moves each at --move-hz with increasing
seq, and reports per client: snapshots/s, input latency (send seq k -> first
snapshot whose own entry has seq >= k) p50/p95/p99/max, bytes/s, and errors;
with --server-pid also the server process's CPU, and the zone's own tick
duration from GET /v1/world/zones.

    python -m bench.world_swarm --url http://127.0.0.1:8000 -n 500 --duration 30

Registering is Argon2id-bound: for big swarms run the server with cheap hashing
(ARGON2_TIME_COST=1 ARGON2_MEMORY_KIB=1024) or let --users-file keep the users
of an earlier run (their tokens are reused while valid).
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from bench.rawws import RawWebSocket
from bench.report import distribution, emit, percentile, progress
from server.ws.hub import EpollHub


class Closed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


_DIGITS: dict[type, re.Pattern[Any]] = {str: re.compile(r"\d+"), bytearray: re.compile(rb"\d+")}


class Player:
    """One swarm client and what it measured."""

    def __init__(self, user: dict[str, Any]) -> None:
        self.user = user
        self.character_id: str = user["character_id"]
        needle = f'"id":"{self.character_id}"'
        self._needles: dict[type, Any] = {str: needle, bytearray: needle.encode()}
        self.sent_at: dict[int, float] = {}
        self.latencies_s: list[float] = []
        self.snapshots = 0
        self.bytes = 0
        self.errors: list[str] = []
        self.joined = trio.Event()  # welcomed in the zone it is meant to play in
        self.zone: str | None = None  # the zone of its last welcome
        self._welcomed = trio.Event()
        self.send: Callable[[str], Awaitable[None]] | None = None
        self.seq = 0
        self.target_zone: str | None = None  # --zones: where it travels after joining

    async def welcome(self) -> str:
        """Wait for the next welcome; the zone it is for."""
        await self._welcomed.wait()
        self._welcomed = trio.Event()
        assert self.zone is not None
        return self.zone

    def received(self, message: str | bytearray, start: int, end: int, now: float,
                 measuring: bool) -> None:
        """One text message, message[start:end] (a str, or a raw client's buffer)."""
        kind = type(message)
        if not message.startswith(_SNAPSHOT[kind], start):
            body = orjson.loads(message[start:end])
            if body.get("type") == "welcome":
                self.zone = body["zone"]
                self._welcomed.set()
            elif body.get("type") == "error":
                self.errors.append(body.get("code", "error"))
            return
        if measuring:
            self.snapshots += 1
            self.bytes += end - start
        # This player's own entry seq, found without parsing the whole snapshot.
        at = message.find(self._needles[kind], start, end)
        if at < 0 or not self.sent_at:
            return
        digits = _DIGITS[kind].match(message, message.find(_SEQ[kind], at, end) + 6)
        if digits is None:
            return
        seq = int(digits.group())
        for k in [k for k in self.sent_at if k <= seq]:
            sent = self.sent_at.pop(k)
            if measuring:
                self.latencies_s.append(now - sent)


_SNAPSHOT: dict[type, Any] = {str: '{"type":"snapshot"', bytearray: b'{"type":"snapshot"'}
_SEQ: dict[type, Any] = {str: '"seq":', bytearray: b'"seq":'}


class Swarm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.players: list[Player] = []
        self.measuring = False
        self.closed: dict[str, int] = {}
        self.hub = EpollHub()  # the raw clients' sockets

    async def run_player(self, player: Player, ws_url: str) -> None:
        try:
            if self.args.client == "raw":
                await self._run_raw(player, ws_url)
            else:
                await self._run_trio_websocket(player, ws_url)
        except ConnectionClosed as exc:
            self.close_reason(str(exc.reason.code if exc.reason else 1006))
        except Closed as exc:
            self.close_reason(str(exc.code))
        except (HandshakeError, OSError) as exc:
            self.close_reason(type(exc).__name__)

    def close_reason(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1

    async def _run_trio_websocket(self, player: Player, ws_url: str) -> None:
        # Big receive buffers: a 500-player snapshot is ~50 KB, and trio-websocket's
        # default of 4 KiB would cost a dozen reads and parser feeds per snapshot.
        async with open_websocket_url(ws_url, message_queue_size=4, max_message_size=1 << 24,
                                      receive_buffer_size=1 << 18) as conn:

            async def receive() -> None:
                while True:
                    message = await conn.get_message()
                    text = message if isinstance(message, str) else bytearray(message)
                    player.received(text, 0, len(text), time.perf_counter(), self.measuring)

            await self._play(player, receive, conn.send_message)

    async def _run_raw(self, player: Player, ws_url: str) -> None:
        def on_text(buf: bytearray, start: int, end: int) -> None:
            player.received(buf, start, end, time.perf_counter(), self.measuring)

        conn = await RawWebSocket.connect(ws_url, on_text)
        self.hub.register(conn.fileno(), conn)
        try:
            conn.on_readable()  # what came with the handshake's answer
            await self._play(player, conn.closed.wait,
                             lambda text: conn.send(text.encode()))
            raise Closed(conn.close_code)
        finally:
            conn.aclose(self.hub)

    async def _play(self, player: Player, receive: Callable[[], Awaitable[None]],
                    send: Callable[[str], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await send(orjson.dumps({"type": "join",
                                     "character_id": player.character_id}).decode())
            zone = await player.welcome()
            if player.target_zone and zone != player.target_zone:
                await send(orjson.dumps({"type": "travel", "zone": player.target_zone}).decode())
                await player.welcome()
            player.send = send  # the mover moves it from now on
            player.joined.set()

    async def mover(self) -> None:
        """Move every joined player at --move-hz, spread over the period in 10 slots: one
        task and one timer for the whole swarm, not one per player."""
        slots = 10
        step = 1 / self.args.move_hz / slots
        start, tick = trio.current_time(), 0
        while True:
            tick += 1
            await trio.sleep_until(start + tick * step)
            for player in self.players[tick % slots::slots]:
                if player.send is None or not player.joined.is_set():
                    continue
                player.seq += 1
                angle = player.seq * 0.7
                player.sent_at[player.seq] = time.perf_counter()
                await player.send(orjson.dumps({
                    "type": "move", "dx": round(math.cos(angle), 3),
                    "dy": round(math.sin(angle), 3), "seq": player.seq}).decode())


async def prepared_users(http: httpx.AsyncClient, args: argparse.Namespace) -> list[dict[str, Any]]:
    """N users with a character and a valid token, reusing those in --users-file."""
    path = trio.Path(args.users_file)
    users: list[dict[str, Any]] = (orjson.loads(await path.read_bytes())
                                   if await path.exists() else [])
    users = users[:args.n]
    limit = trio.CapacityLimiter(16)
    done = 0

    async def ready(user: dict[str, Any] | None, into: list[dict[str, Any]]) -> None:
        nonlocal done
        async with limit:
            into.append(await _with_token(http, user, args))
            done += 1
            progress(f"preparing users {done}/{args.n}")

    fresh: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        for user in users:
            nursery.start_soon(ready, user, fresh)
        for _ in range(args.n - len(users)):
            nursery.start_soon(ready, None, fresh)
    await path.write_bytes(orjson.dumps(fresh))
    return fresh


async def _with_token(http: httpx.AsyncClient, user: dict[str, Any] | None,
                      args: argparse.Namespace) -> dict[str, Any]:
    if user is not None:
        try:
            return await _refreshed(http, user, args)
        except httpx.HTTPStatusError:
            pass  # a server with other data: make a new user
    name = f"swarm_{uuid.uuid4().hex[:12]}"
    user = {"username": name, "password": "correct horse battery"}
    response = await http.post("/v1/auth/register", json={**user, "email": f"{name}@example.com"})
    response.raise_for_status()
    user["token"] = response.json()["token"]
    created = await http.post("/v1/characters", json={"name": name[-12:]},
                              headers={"Authorization": f"Bearer {user['token']}"})
    created.raise_for_status()
    user["character_id"] = created.json()["id"]
    return user


async def _refreshed(http: httpx.AsyncClient, user: dict[str, Any],
                     args: argparse.Namespace) -> dict[str, Any]:
    """`user` with a token valid for the run; raises HTTPStatusError if it is unknown."""
    if _expires(user["token"]) < time.time() + args.duration + 120:
        response = await http.post("/v1/auth/login", json={
            "username": user["username"], "password": user["password"]})
        response.raise_for_status()
        user["token"] = response.json()["token"]
    mine = await http.get("/v1/characters", headers={"Authorization": f"Bearer {user['token']}"})
    mine.raise_for_status()
    if user["character_id"] not in {c["id"] for c in mine.json()["characters"]}:
        raise httpx.HTTPStatusError("character gone", request=mine.request, response=mine)
    return user


def _expires(token: str) -> float:
    payload = token.split(".")[1]
    return float(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                 ["exp"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=args.url, timeout=60) as http:
        users = await prepared_users(http, args)
        swarm = Swarm(args)
        ws_base = args.url.replace("http", "ws", 1) + "/v1/world/ws?token="
        async with trio.open_nursery() as nursery:
            nursery.start_soon(swarm.mover)
            nursery.start_soon(swarm.hub.run)
            for i, user in enumerate(users):
                player = Player(user)
                if args.zones:
                    player.target_zone = args.zones[i % len(args.zones)]
                swarm.players.append(player)
                nursery.start_soon(swarm.run_player, player, ws_base + user["token"])
                if i % 25 == 24:
                    await trio.sleep(args.ramp_s / max(1, len(users) / 25))
                progress(f"joining {sum(p.joined.is_set() for p in swarm.players)}/{len(users)}")
            with trio.move_on_after(60):
                for player in swarm.players:
                    await player.joined.wait()
            await trio.sleep(args.warmup_s)  # let the last ones settle before measuring
            swarm.measuring = True
            started, cpu_started = time.perf_counter(), _cpu(args)
            await _report_while(swarm, args.duration)
            elapsed = time.perf_counter() - started
            server_cpu = _cpu(args) - cpu_started if args.server_pid else None
            swarm.measuring = False
            zones = (await http.get("/v1/world/zones")).json()["zones"]
            nursery.cancel_scope.cancel()
    emit(f"world_swarm: {len(users)} players, moves at {args.move_hz} Hz, {args.duration} s",
         summary(swarm, elapsed, server_cpu, zones), as_json=args.json)


def _cpu(args: argparse.Namespace) -> float:
    return cpu_seconds(args.server_pid) if args.server_pid else 0.0


async def _report_while(swarm: Swarm, duration_s: float) -> None:
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < duration_s:
        await trio.sleep(min(1.0, duration_s - elapsed))
        elapsed = time.perf_counter() - started  # what the counts cover
        rates = [p.snapshots / elapsed for p in swarm.players]
        latencies = [x for p in swarm.players for x in p.latencies_s[-50:]]
        progress(f"t={elapsed:4.0f}s snapshots/s p50 {percentile(rates, 50):5.1f} "
                 f"min {min(rates, default=0):5.1f}  latency p99 "
                 f"{1000 * percentile(latencies, 99):6.1f} ms")


def summary(swarm: Swarm, elapsed: float, server_cpu: float | None,
            zones: list[dict[str, Any]]) -> dict[str, object]:
    # Per-client figures are over the players that got into their zone; the others
    # show up in "joined" and "errors" (a zone that is not running, say).
    players = [p for p in swarm.players if p.joined.is_set()]
    rates = [p.snapshots / elapsed for p in players]
    latencies = [x for p in players for x in p.latencies_s]

    def per_client(values: list[float]) -> dict[str, float]:
        return {"min": round(min(values, default=math.nan), 2),
                "p50": round(percentile(values, 50), 2),
                "max": round(max(values, default=math.nan), 2)}

    errors: dict[str, int] = {}
    for p in swarm.players:
        for code in p.errors:
            errors[code] = errors.get(code, 0) + 1
    result: dict[str, object] = {
        "players": len(swarm.players), "joined": len(players),
        "measured_s": round(elapsed, 1),
        "snapshots_per_s_per_client": per_client(rates),
        "clients_under_19_5_per_s": sum(r < 19.5 for r in rates),
        "input_latency": {**distribution(latencies), "samples": len(latencies)},
        "kbytes_per_s_per_client": per_client([p.bytes / elapsed / 1000 for p in players]),
        "errors": errors or 0, "closed": swarm.closed or 0,
    }
    if server_cpu is not None:
        result["server_cpu_percent_of_a_core"] = round(100 * server_cpu / elapsed, 1)
    for zone in zones:
        result[f"zone_{zone['zone']}_tick_ms"] = zone.get("tick_ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=100, help="players")
    parser.add_argument("--move-hz", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--ramp-s", type=float, default=5.0, help="seconds to join everyone")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--users-file", default=".swarm-users.json")
    parser.add_argument("--zones", type=lambda raw: raw.split(","), default=[],
                        help="spread the players over these zones (they travel there after "
                             "joining), e.g. z1,z2")
    parser.add_argument("--client", choices=("trio-websocket", "raw"), default="trio-websocket",
                        help="raw: a lean client that does not decode snapshots, for swarms "
                             "larger than one core can drive with trio-websocket")
    parser.add_argument("--server-pid", type=int, help="report this process's CPU")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
