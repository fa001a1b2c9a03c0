"""World swarm: N players join a zone, move, and measure what they get back.

Registers (or reuses, from --users-file) N users with a character each, joins them
over WebSockets in protocol v1 (JSON) or v2 (--protocol v2: MessagePack deltas),
moves each at --move-hz with increasing seq, and reports per client: snapshots/s,
input latency (send seq k -> first snapshot whose own entry has seq >= k)
p50/p95/p99/max, bytes/s, players visible per snapshot, moves sent per second, its own
CPU (a swarm with no core left drives less than it was asked to, and its latencies are
partly its own), and errors; and the frames that did not decode or apply: every frame
of every --check-every'th client is decoded whole from its join on (the ramp included;
v1 as JSON, v2 typed and followed eid by eid, bench/v2.py `Follower`), and one that
fails is reported with why, and answered with a `resync` as a client would; with
--server-pid also the server process's CPU, and the zone's own tick duration from
GET /v1/world/zones.

    python -m bench.world_swarm --url http://127.0.0.1:8000 -n 500 --client raw
    python -m bench.world_swarm -n 2000 --client raw --protocol v2 --spread --view-radius 100

--spread first walks every player to a spot of its own, uniform over --bounds (the
zone's, ±1000 by default), and keeps it near there; the zone keeps positions, so a
later run with the same --users-file starts spread. --view-radius is the server's
WORLD_VIEW_RADIUS, for the report. Registering is Argon2id-bound: for big swarms run
the server with cheap hashing (ARGON2_TIME_COST=1 ARGON2_MEMORY_KIB=1024) and
registration limits above N (REGISTER_RATE_PER_ADDRESS, REGISTER_RATE_TOTAL: the
swarm registers from one address), or let --users-file keep the users of an earlier
run (their tokens are reused while valid).

--fire-share S makes a share of the players shooters (the shooter's rules, the
default game): each fires the pistol at --fire-hz at someone it sees (a player of its
last snapshot, aimed at where that snapshot shows it, claiming that snapshot's tick, as
a lag-compensated client does); the report counts shots, the events every player
received (hit, death, respawn) and the refusals (the dead, fire too fast).

    WORLD_MAP=bench/arena.json outpost dev   # spawn points over the whole zone
    python -m bench.world_swarm -n 1000 --client raw --protocol v2 --spread --fire-share 0.1

The dead (from their `death` event to their `respawn`) neither move nor fire.

SIGINT or SIGTERM while measuring ends the run early, with its report; SIGUSR1 stops
the moves (the players stay). --ledger FILE
writes what the server acknowledged to each player: its own entries (seq and
position) as they changed, its welcomes and its close code, each with the machine's
monotonic clock; the fault suite audits it against Postgres (tests/faults/).
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import random
import signal
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from bench import v2
from bench.rawws import RawWebSocket
from bench.report import distribution, emit, percentile, progress, quantiles
from server.ws.hub import EpollHub

Buffer = bytes | bytearray
SAMPLE_EVERY = 5  # snapshots between two samples of what a client sees
SPREAD_STEP = 5.0  # a zone's default WORLD_MAX_STEP: walking faster is cut short


class Closed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class V1:
    """What the swarm reads of v1 JSON, without parsing whole snapshots."""

    name = "v1"
    snapshot_prefix = b'{"type":"snapshot"'
    def __init__(self) -> None:
        self._needle = b""

    def own(self, character_id: str, eid: int | None, fields: int) -> None:
        self._needle = f'"id":"{character_id}"'.encode()

    def encode(self, message: dict[str, Any]) -> bytes:
        return orjson.dumps(message)

    def decode(self, payload: Buffer) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(payload)
        return body

    def entry(self, buf: Buffer, start: int, end: int) -> tuple[int, float, float] | None:
        """(seq, x, y) of this player's entry: the one object around its id."""
        at = buf.find(self._needle, start, end)
        if at < 0:
            return None
        entry = orjson.loads(buf[buf.rfind(b"{", start, at):buf.find(b"}", at, end) + 1])
        return entry["seq"], entry["x"], entry["y"]

    def visible(self, buf: Buffer, start: int, end: int, before: int) -> int:
        return buf.count(b'"id":', start, end)


class V2:
    """What the swarm reads of v2 MessagePack: its own entry, and the counts."""

    name = "v2"
    snapshot_prefix = b"\x87\xa4type\xa8snapshot"

    def __init__(self) -> None:
        self._own: v2.OwnEntry | None = None

    def own(self, character_id: str, eid: int | None, fields: int) -> None:
        assert eid is not None, "a v2 welcome carries the eid"
        self._own = v2.OwnEntry(eid, fields)

    def encode(self, message: dict[str, Any]) -> bytes:
        return v2.encode(message)

    def decode(self, payload: Buffer) -> dict[str, Any]:
        return v2.decode(payload)

    def entry(self, buf: Buffer, start: int, end: int) -> tuple[int, float, float] | None:
        return self._own.entry(buf, start, end) if self._own else None

    def visible(self, buf: Buffer, start: int, end: int, before: int) -> int:
        base = buf.find(b"\xa4base", start, end) + 5
        entered = _count(buf, buf.find(b"\xa5enter", base, end) + 6)
        left = _count(buf, buf.find(b"\xa5leave", base, end) + 6)
        return entered if buf[base] == 0xC0 else before + entered - left


def inflate(data: bytes) -> bytes:
    """One message compressed with permessage-deflate, without context takeover."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data + b"\x00\x00\xff\xff")


def _count(buf: Buffer, at: int) -> int:
    """The length of the MessagePack array whose header is at `at`."""
    first = buf[at]
    if first & 0xF0 == 0x90:
        return first & 0x0F
    return int.from_bytes(buf[at + 1:at + (3 if first == 0xDC else 5)], "big")


Wire = V1 | V2


class Player:
    """One swarm client and what it measured."""

    def __init__(self, user: dict[str, Any], wire: Wire, *, ledger: bool = False,
                 checked: bool = False) -> None:
        self.user = user
        self.ledger = ledger
        self.follower = v2.Follower() if checked and wire.name == "v2" else None
        self.checked = checked
        self.frames_checked = 0
        self.failed: list[str] = []  # why frames did not decode or apply
        self.resync: Callable[[], None] | None = None  # ask for a complete snapshot
        self.character_id: str = user["character_id"]
        self.wire = wire
        self.sent_at: dict[int, float] = {}
        self.latencies_s: list[float] = []
        self.snapshots = 0
        self.bytes = 0
        self.visible = 0
        self.visible_samples: list[int] = []
        self.errors: list[str] = []
        self.joined = trio.Event()  # welcomed in the zone it is meant to play in
        self.spread = trio.Event()  # at its own spot (--spread)
        self.zone: str | None = None  # the zone of its last welcome
        self.at = (0.0, 0.0)  # where its last welcome put it
        self._welcomed = trio.Event()
        self.send: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.seq = 0
        self.target_zone: str | None = None  # --zones: where it travels after joining
        self.aims = False  # --fire-share: it fires at whom its snapshots show
        self.sight: v2.PlayerView | list[dict[str, Any]] = []  # whom it saw last
        self.shown_tick = 0  # the tick of the last snapshot it read
        self.dead = False  # between its death and its respawn: it neither moves nor fires
        self.shots = 0
        self.events: dict[str, int] = {}  # the events it received while measuring, by kind
        self.reads_compressed = True  # inflates compressed snapshots (--read-every)
        # --ledger: what the server acknowledged, with time.monotonic() (the same clock in
        # every process of this machine): [t, seq, x, y] whenever its own entry changed,
        # [t, zone, x, y] per welcome, and the close code it ended with.
        self.acked: list[tuple[float, int, float, float]] = []
        self.welcomes: list[tuple[float, str, float, float]] = []
        self.close_code: str | None = None

    async def welcome(self) -> str:
        """Wait for the next welcome; the zone it is for."""
        await self._welcomed.wait()
        self._welcomed = trio.Event()
        assert self.zone is not None
        return self.zone

    def unread(self, wire_bytes: int, measuring: bool) -> None:
        """A snapshot this player does not read (compressed ones are snapshots: the
        server compresses nothing else), counted."""
        if measuring:
            self.snapshots += 1
            self.bytes += wire_bytes

    def received(self, buf: Buffer, start: int, end: int, now: float, measuring: bool,
                 wire_bytes: int | None = None) -> None:
        """One message, buf[start:end] (`wire_bytes` of it on the wire, if compressed)."""
        wire = self.wire
        if not buf.startswith(wire.snapshot_prefix, start):
            body = wire.decode(buf[start:end])
            if body.get("type") == "welcome":
                self.zone = body["zone"]
                self.at = (body["character"]["x"], body["character"]["y"])
                self.welcomes.append((time.monotonic(), body["zone"], *self.at))
                fields = len(body.get("fields", ()))  # the game's, after [eid, x, y, seq]
                wire.own(self.character_id, body.get("eid"), fields)
                if self.follower is not None:
                    self.follower = v2.Follower(fields)
                self._welcomed.set()
            elif body.get("type") == "error":
                self.errors.append(body.get("code", "error"))
            elif body.get("type") == "events":
                self._happened(body["events"], measuring)
            return
        if self.checked:
            self._check(buf[start:end])
        if self.aims:
            self._look(buf[start:end])
        self.visible = wire.visible(buf, start, end, self.visible)
        if measuring:
            self.snapshots += 1
            self.bytes += end - start if wire_bytes is None else wire_bytes
            if self.snapshots % SAMPLE_EVERY == 0:
                self.visible_samples.append(self.visible)
        if not self.sent_at and not self.ledger:
            return
        entry = wire.entry(buf, start, end)
        if entry is None:
            return
        if self.ledger and (not self.acked or self.acked[-1][1:] != entry):
            self.acked.append((time.monotonic(), *entry))
        seq = entry[0]
        for k in [k for k in self.sent_at if k <= seq]:
            sent = self.sent_at.pop(k)
            if measuring:
                self.latencies_s.append(now - sent)


    def _happened(self, events: list[dict[str, Any]], measuring: bool) -> None:
        for event in events:
            kind = event["kind"]
            if measuring:
                self.events[kind] = self.events.get(kind, 0) + 1
            if kind == "death" and event["victim"] == self.character_id:
                self.dead = True
            elif kind == "respawn" and event["player"] == self.character_id:
                self.dead = False

    def _look(self, payload: Buffer) -> None:
        """Keep whom the snapshot shows, to aim at (a v2 view is followed delta by delta;
        one it cannot apply is answered with a resync)."""
        body = self.wire.decode(payload)
        if isinstance(self.sight, list):
            self.sight = body["players"]
        else:
            try:
                self.sight.apply(body)
            except (v2.OutOfStep, KeyError):
                self.sight = v2.PlayerView()
                if self.resync is not None:
                    self.resync()
                return
        self.shown_tick = body["tick"]

    def aim(self, rng: random.Random) -> dict[str, Any] | None:
        """A `fire` at someone of the last snapshot, where it shows them; None if it
        shows no one else."""
        if isinstance(self.sight, list):
            seen = [(p["id"], p["x"], p["y"]) for p in self.sight]
        else:
            seen = [(p.character_id, p.x, p.y) for p in self.sight.players.values()]
        me = next((s for s in seen if s[0] == self.character_id), None)
        others = [s for s in seen if s[0] != self.character_id]
        if me is None or not others:
            return None
        _, x, y = rng.choice(others)
        ax, ay = round(x - me[1], 3), round(y - me[2], 3)
        if ax == 0.0 and ay == 0.0:
            return None
        self.seq += 1
        return {"type": "fire", "seq": self.seq, "weapon": "pistol", "ax": ax, "ay": ay,
                "tick": self.shown_tick}

    def _check(self, payload: Buffer) -> None:
        """Decode the whole snapshot (and follow it, in v2); a failure is counted and
        answered with a resync."""
        self.frames_checked += 1
        if self.follower is not None:
            why = self.follower.take(payload)
        else:
            try:
                why = None if "players" in orjson.loads(payload) else "no players"
            except orjson.JSONDecodeError as exc:
                why = f"does not decode: {exc}"
        if why is not None:
            self.failed.append(why)
            if self.resync is not None:
                self.resync()


class Swarm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.players: list[Player] = []
        self.measuring = False
        self.moving = True  # until SIGUSR1
        self.closed: dict[str, int] = {}
        self.hub = EpollHub()  # the raw clients' sockets
        self.own_cpu = 0.0  # this process's CPU seconds in the window
        self.moves_sent: list[int] = []  # by each player in the window

    async def run_player(self, player: Player, ws_url: str) -> None:
        try:
            if self.args.client == "raw":
                await self._run_raw(player, ws_url)
            else:
                await self._run_trio_websocket(player, ws_url)
        except ConnectionClosed as exc:
            player.close_code = self.close_reason(str(exc.reason.code if exc.reason else 1006))
        except Closed as exc:
            player.close_code = self.close_reason(str(exc.code))
        except (HandshakeError, OSError) as exc:
            player.close_code = self.close_reason(type(exc).__name__)
        finally:
            player.send = None  # the mover moves it no more

    def close_reason(self, reason: str) -> str:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        return reason

    async def _run_trio_websocket(self, player: Player, ws_url: str) -> None:
        # Big receive buffers: a 500-player v1 snapshot is ~50 KB, and trio-websocket's
        # default of 4 KiB would cost a dozen reads and parser feeds per snapshot.
        protocols = [v2.SUBPROTOCOL] if player.wire.name == "v2" else None
        async with open_websocket_url(ws_url, message_queue_size=4, max_message_size=1 << 24,
                                      receive_buffer_size=1 << 18,
                                      subprotocols=protocols) as conn:

            async def receive() -> None:
                while True:
                    message = await conn.get_message()
                    raw = message.encode() if isinstance(message, str) else message
                    player.received(raw, 0, len(raw), time.perf_counter(), self.measuring)

            async def send(message: dict[str, Any]) -> None:
                encoded = player.wire.encode(message)
                await conn.send_message(encoded.decode() if player.wire.name == "v1"
                                        else encoded)

            await self._play(player, receive, send)

    async def _run_raw(self, player: Player, ws_url: str) -> None:
        def on_message(buf: bytearray, start: int, end: int, compressed: bool) -> None:
            now = time.perf_counter()
            if compressed and player.reads_compressed:
                data = inflate(bytes(buf[start:end]))
                player.received(data, 0, len(data), now, self.measuring, end - start)
            elif compressed or (not player.reads_compressed
                                and buf.startswith(player.wire.snapshot_prefix, start)):
                # A player that does not read its snapshots must not read any of them:
                # what it saw would lack the compressed ones.
                player.unread(end - start, self.measuring)
            else:
                player.received(buf, start, end, now, self.measuring)

        protocol = v2.SUBPROTOCOL if player.wire.name == "v2" else None
        conn = await RawWebSocket.connect(ws_url, on_message, protocol=protocol,
                                          deflate=self.args.deflate)
        self.hub.register(conn.fileno(), conn)
        try:
            conn.on_input(None, b"")  # what came with the handshake's answer

            async def send(message: dict[str, Any]) -> None:
                await conn.send(player.wire.encode(message))

            await self._play(player, conn.closed.wait, send)
            raise Closed(conn.close_code)
        finally:
            conn.aclose(self.hub)

    async def _play(self, player: Player, receive: Callable[[], Awaitable[None]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        async with trio.open_nursery() as nursery:
            player.resync = lambda: nursery.start_soon(send, {"type": "resync"})
            nursery.start_soon(receive)
            await send({"type": "join", "character_id": player.character_id})
            zone = await player.welcome()
            if player.target_zone and zone != player.target_zone:
                await send({"type": "travel", "zone": player.target_zone})
                await player.welcome()
            player.joined.set()
            if self.args.spread:
                await self._walk_to_own_spot(player, send)
            player.spread.set()
            player.send = send  # the mover moves it from now on

    async def _walk_to_own_spot(self, player: Player,
                                send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Walk to a spot of the player's own (the same every run), uniform over --bounds,
        a step a tick at most; the zone saves where it ends up."""
        spot = random.Random(player.user["username"])
        min_x, min_y, max_x, max_y = self.args.bounds
        tx, ty = spot.uniform(min_x, max_x), spot.uniform(min_y, max_y)
        x, y = player.at
        while (distance := math.hypot(tx - x, ty - y)) > SPREAD_STEP:
            dx, dy = (tx - x) * SPREAD_STEP / distance, (ty - y) * SPREAD_STEP / distance
            player.seq += 1
            await send({"type": "move", "dx": round(dx, 3), "dy": round(dy, 3),
                        "seq": player.seq})
            x, y = x + dx, y + dy
            await trio.sleep(0.1)

    async def mover(self) -> None:
        """Move every player that is in place at --move-hz."""
        def move(player: Player) -> dict[str, Any] | None:
            if player.dead:
                return None
            player.seq += 1
            angle = player.seq * 0.7
            player.sent_at[player.seq] = time.perf_counter()
            return {"type": "move", "dx": round(math.cos(angle), 3),
                    "dy": round(math.sin(angle), 3), "seq": player.seq}

        await self._every(self.args.move_hz, self.players, move)

    async def shooter(self) -> None:
        """Fire at --fire-hz with every aiming player in place (--fire-share)."""
        rng = random.Random(1)

        def fire(player: Player) -> dict[str, Any] | None:
            if not player.aims or player.dead:
                return None
            body = player.aim(rng)
            if body is not None and self.measuring:
                player.shots += 1
            return body

        await self._every(self.args.fire_hz, self.players, fire)

    async def _every(self, hz: float, players: list[Player],
                     message: Callable[[Player], dict[str, Any] | None]) -> None:
        """Send each of `players` in place its `message` at `hz`, spread over the period
        in 10 slots: one task and one timer for the whole swarm, not one per player. A
        loop that falls a period behind (a swarm short of CPU) skips the slots it missed,
        as a client's input loop would: catching up would send each player a burst
        (after a server's 3 s stall, 224 moves in one read: 4008, too many messages)."""
        slots = 10
        step = 1 / hz / slots
        start, tick = trio.current_time(), 0
        while True:
            tick += 1
            behind = trio.current_time() - (start + tick * step)
            if behind > slots * step:
                tick += int(behind / step)
            await trio.sleep_until(start + tick * step)
            for player in players[tick % slots::slots]:
                if player.send is None or not self.moving:
                    continue
                body = message(player)
                if body is None:
                    continue
                try:
                    await player.send(body)
                except (OSError, ConnectionClosed):
                    player.send = None  # closed under it: run_player counts why


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
    if _expires(user["token"]) < time.time() + args.duration + 300:
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
            nursery.start_soon(swarm.shooter)
            nursery.start_soon(swarm.hub.run)
            for i, user in enumerate(users):
                player = Player(user, V2() if args.protocol == "v2" else V1(),
                                ledger=bool(args.ledger), checked=i % args.check_every == 0)
                player.reads_compressed = i % args.read_every == 0
                player.aims = i < round(args.fire_share * len(users))
                player.sight = v2.PlayerView() if args.protocol == "v2" else []
                if args.zones:
                    player.target_zone = args.zones[i % len(args.zones)]
                swarm.players.append(player)
                nursery.start_soon(swarm.run_player, player, ws_base + user["token"])
                if i % 25 == 24:
                    await trio.sleep(args.ramp_s / max(1, len(users) / 25))
                progress(f"joining {sum(p.joined.is_set() for p in swarm.players)}/{len(users)}")
            await _all_set(swarm, "joined", 60)
            await _all_set(swarm, "spread", 120)
            await trio.sleep(args.warmup_s)  # let the last ones settle before measuring
            if args.ready_file:
                await trio.Path(args.ready_file).touch()
            swarm.measuring = True
            started, cpu_started = time.perf_counter(), _cpu(args)
            own_started, seqs = cpu_seconds(os.getpid()), [p.seq for p in swarm.players]
            await _measure(swarm, args.duration)
            elapsed = time.perf_counter() - started
            server_cpu = _cpu(args) - cpu_started if args.server_pid else None
            swarm.own_cpu = cpu_seconds(os.getpid()) - own_started
            swarm.moves_sent = [p.seq - seq for p, seq in zip(swarm.players, seqs, strict=True)]
            swarm.measuring = False
            try:
                zones = (await http.get("/v1/world/zones")).json()["zones"]
            except httpx.TransportError:  # the server is gone (a fault test killed it)
                zones = []
            nursery.cancel_scope.cancel()
    if args.ledger:
        await trio.Path(args.ledger).write_bytes(orjson.dumps(ledger(swarm)))
    emit(f"world_swarm: {len(users)} players ({args.protocol}), moves at {args.move_hz} Hz, "
         f"{args.duration} s", summary(swarm, elapsed, server_cpu, zones), as_json=args.json)


async def _all_set(swarm: Swarm, event: str, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s):
        for i, player in enumerate(swarm.players):
            await getattr(player, event).wait()
            progress(f"{event} {i + 1}/{len(swarm.players)}")


def _cpu(args: argparse.Namespace) -> float:
    return cpu_seconds(args.server_pid) if args.server_pid else 0.0


async def _measure(swarm: Swarm, duration_s: float) -> None:
    """Measure for `duration_s`, or until SIGINT or SIGTERM ends the run early (it reports
    what it measured, and writes the ledger, all the same). SIGUSR1 stops the moves,
    the players staying: what they were last shown is then where they are."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:

            async def obey() -> None:
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        swarm.moving = False
                    else:
                        nursery.cancel_scope.cancel()

            nursery.start_soon(obey)
            await _report_while(swarm, duration_s)
            nursery.cancel_scope.cancel()


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
    args = swarm.args
    players = [p for p in swarm.players if p.joined.is_set()]
    rates = [p.snapshots / elapsed for p in players]
    latencies = [x for p in players for x in p.latencies_s]  # of those that read

    def per_client(values: list[float]) -> dict[str, float]:
        return {"min": round(min(values, default=math.nan), 2),
                "p50": round(percentile(values, 50), 2),
                "max": round(max(values, default=math.nan), 2)}

    errors: dict[str, int] = {}
    for p in swarm.players:
        for code in p.errors:
            errors[code] = errors.get(code, 0) + 1
    visible = [n for p in players for n in p.visible_samples]
    failed = [why for p in swarm.players for why in p.failed]
    result: dict[str, object] = {
        "players": len(swarm.players), "joined": len(players), "protocol": args.protocol,
        "deflate": args.deflate, "read_every": args.read_every,
        "spread": args.spread, "view_radius": args.view_radius,
        "measured_s": round(elapsed, 1),
        "snapshots_per_s_per_client": per_client(rates),
        "clients_under_19_5_per_s": sum(r < 19.5 for r in rates),
        "input_latency": {**distribution(latencies), "samples": len(latencies)},
        "kbytes_per_s_per_client": per_client([p.bytes / elapsed / 1000 for p in players]),
        "visible_per_snapshot": quantiles(visible),
        "errors": errors or 0, "closed": swarm.closed or 0,
        "frames_checked": sum(p.frames_checked for p in swarm.players),
        "frames_failed": {"count": len(failed), "first": failed[:5]},
    }
    if args.fire_share:
        events: dict[str, int] = {}
        for p in players:
            for kind, count in p.events.items():
                events[kind] = events.get(kind, 0) + count
        result["firing"] = sum(p.aims for p in players)
        result["shots_per_s"] = round(sum(p.shots for p in players) / elapsed, 1)
        result["events_received_per_s"] = {kind: round(count / elapsed, 1)
                                           for kind, count in sorted(events.items())}
    # A swarm that has no core left sends fewer moves than asked and reads late: the
    # load is then lighter than the run says, and the latencies partly its own.
    result["moves_per_s_per_client"] = per_client([n / elapsed for n in swarm.moves_sent])
    result["swarm_cpu_percent_of_a_core"] = round(100 * swarm.own_cpu / elapsed, 1)
    if server_cpu is not None:
        result["server_cpu_percent_of_a_core"] = round(100 * server_cpu / elapsed, 1)
    for zone in zones:
        result[f"zone_{zone['zone']}_tick_ms"] = zone.get("tick_ms")
    return result


def ledger(swarm: Swarm) -> dict[str, object]:
    """What the server acknowledged to each player (--ledger), for an audit to compare
    with what it stored (tests/faults/)."""
    return {"players": [{"character_id": p.character_id,
                         "sent": p.seq, "acked": p.acked, "welcomes": p.welcomes,
                         "close": p.close_code, "errors": p.errors}
                        for p in swarm.players]}


def _bounds(raw: str) -> tuple[float, float, float, float]:
    min_x, min_y, max_x, max_y = (float(part) for part in raw.split(","))
    return min_x, min_y, max_x, max_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=100, help="players")
    parser.add_argument("--protocol", choices=("v1", "v2"), default="v1")
    parser.add_argument("--move-hz", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--ramp-s", type=float, default=5.0, help="seconds to join everyone")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--users-file", default=".swarm-users.json")
    parser.add_argument("--spread", action="store_true",
                        help="place the players uniformly over --bounds, not near the origin")
    parser.add_argument("--bounds", type=_bounds, default=(-1000.0, -1000.0, 1000.0, 1000.0),
                        help="the zone's WORLD_BOUNDS, for --spread")
    parser.add_argument("--view-radius", type=float, default=0.0,
                        help="the server's WORLD_VIEW_RADIUS, for the report")
    parser.add_argument("--zones", type=lambda raw: raw.split(","), default=[],
                        help="spread the players over these zones (they travel there after "
                             "joining), e.g. z1,z2")
    parser.add_argument("--client", choices=("trio-websocket", "raw"), default="trio-websocket",
                        help="raw: a lean client that does not decode snapshots, for swarms "
                             "larger than one core can drive with trio-websocket")
    parser.add_argument("--deflate", action="store_true",
                        help="offer permessage-deflate (raw client); see --read-every")
    parser.add_argument("--read-every", type=int, default=1,
                        help="with --deflate, only every k-th player inflates its snapshots "
                             "(the others count them): latency and visible players are "
                             "measured on those, for a swarm that must fit in one core")
    parser.add_argument("--check-every", type=int, default=1,
                        help="decode every frame of every k-th client whole, and follow its "
                             "view (1: every client; a v1 client of a big zone costs the "
                             "swarm a JSON parse of each snapshot)")
    parser.add_argument("--fire-share", type=float, default=0.0,
                        help="the share of players that fire the pistol at someone they see "
                             "(the shooter's rules)")
    parser.add_argument("--fire-hz", type=float, default=1.8,
                        help="shots a second of each firing player (the pistol allows 2: a "
                             "little under it, as a client's cooldown under jitter keeps)")
    parser.add_argument("--server-pid", type=int, help="report this process's CPU")
    parser.add_argument("--ready-file", help="touch this file when the players are in and "
                                             "measuring begins")
    parser.add_argument("--ledger", help="write what the server acknowledged to each player "
                                         "(its own entries' seq and position, its welcomes, "
                                         "its close) to this JSON file")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
