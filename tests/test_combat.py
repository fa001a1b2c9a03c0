"""The shooter over real WebSockets (docs/rules.md, "The shooter"; docs/protocol.md,
"fire" and "events"): lag compensation (a shot judged where the target was at the tick
the shooter's client showed, within the window, and a claim older than it clamped),
weapon rates and unlocks, walls that stop shots and moves, death and respawn, the same
hit points and events for v1 and v2 clients, and the kill counted once in /v1/me.

Rules: an in-process api with its zone and the provisioner (progression unlocks the
pistol), on the session's services. Players are placed with one long move (a large
WORLD_MAX_STEP), and time is read from the snapshots' ticks, never from a clock: a
test waits for the tick it needs (a rewind window of 20 ticks leaves a busy machine
room). A map file of the test's own puts a wall between x = 4 and 6, y = 20 and 50.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_asyncio
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy
from trio_websocket import ConnectionClosed, WebSocketConnection

from bench import v2
from bus.combat import SERVICES as KILL_SERVICES
from bus.subjects import COMBAT_KILLED, STREAMS
from persistence.errors import NotProvisioned
from persistence.players import count_kills
from persistence.progression import award_kills
from server.config import Settings
from server.process import Roles, Running
from tests.helpers import bearer, eventually, metric, running_process, use_api_loop
from tests.world import connect, new_player, ws_url

REWIND_TICKS = 20  # WORLD_MAX_REWIND_MS of 1 s at 20 Hz
RESPAWN_S = 1.0
WALL = [4.0, 20.0, 6.0, 50.0]  # north of the lines of fire, but the wall test's
SPAWN = [-100.0, -100.0]


@pytest.fixture
async def arena(settings: Settings, nursery: trio.Nursery,
                tmp_path: Path) -> AsyncIterator[Running]:
    game_map = tmp_path / "arena.json"
    game_map.write_bytes(orjson.dumps({"walls": [WALL], "spawns": [SPAWN]}))
    game = dataclasses.replace(settings, world_max_step=100.0, world_max_rewind_s=1.0,
                               world_respawn_s=RESPAWN_S, world_map=str(game_map))
    async with running_process(game, nursery, Roles(provisioner=True,
                                                     zones=("z1",))) as running:
        use_api_loop(running)
        yield running


class Client:
    """A player on a v1 (JSON) or v2 (MessagePack) socket: what its snapshots showed
    (by tick), its events and its errors, read by one task."""

    def __init__(self, conn: WebSocketConnection, wire: str) -> None:
        self.conn, self.wire = conn, wire
        self.seq = 0
        self.tick = -1
        self.seen: dict[int, dict[str, dict[str, Any]]] = {}  # tick -> id -> entry
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self._view = v2.PlayerView()
        self._fields: list[str] = []
        self._changed = trio.Event()

    async def run(self) -> None:
        while True:
            try:
                raw = await self.conn.get_message()
            except ConnectionClosed:  # the test is over
                return
            message = v2.decode(raw) if isinstance(raw, bytes) else orjson.loads(raw)
            kind = message["type"]
            if kind == "welcome":
                self._fields = message.get("fields", [])
            elif kind == "snapshot":
                self.tick = message["tick"]
                self.seen[self.tick] = self._entries(message)
            elif kind == "events":
                self.events += message["events"]
            elif kind == "error":
                self.errors.append(message)
            self._changed.set()
            self._changed = trio.Event()

    def _entries(self, message: dict[str, Any]) -> dict[str, dict[str, Any]]:
        if self.wire == "v1":
            return {p["id"]: p for p in message["players"]}
        self._view.apply(message)
        return {p.character_id: {"x": p.x, "y": p.y, "seq": p.seq,
                                 **dict(zip(self._fields, p.fields, strict=True))}
                for p in self._view.players.values()}

    async def until(self, check: Any, what: str) -> Any:
        with trio.fail_after(10):
            while not (found := check()):
                await self._changed.wait()
        return found

    async def send(self, message: dict[str, Any]) -> int:
        self.seq += 1
        body = {**message, "seq": self.seq}
        await self.conn.send_message(v2.encode(body) if self.wire == "v2"
                                     else orjson.dumps(body).decode())
        return self.seq

    async def join(self, character_id: str) -> None:
        await self.conn.send_message(v2.encode({"type": "join", "character_id": character_id})
                                     if self.wire == "v2" else orjson.dumps(
                                         {"type": "join", "character_id": character_id}
                                     ).decode())
        await self.until(lambda: self.tick >= 0, "a snapshot")

    def at(self, character_id: str) -> dict[str, Any] | None:
        return self.seen.get(self.tick, {}).get(character_id)

    async def moved_to(self, character_id: str, x: float, y: float) -> int:
        """Move its own character by one long move to (x, y) from where it is; the tick
        of the snapshot that shows it there."""
        me = self.at(character_id)
        assert me is not None
        await self.send({"type": "move", "dx": x - me["x"], "dy": y - me["y"]})
        await self.until(lambda: (e := self.at(character_id)) and (e["x"], e["y"]) == (x, y),
                         f"{character_id} at ({x}, {y})")
        return self.tick

    async def past(self, tick: int) -> None:
        await self.until(lambda: self.tick > tick, f"tick {tick}")


@dataclasses.dataclass
class Fighter:
    user: dict[str, Any]
    client: Client

    @property
    def id(self) -> str:
        return str(self.user["character"]["id"])


@asynccontextmanager
async def fighters(arena: Running, *wires: str) -> AsyncIterator[list[Fighter]]:
    """Players in the arena, one a wire, each joined with its client reading."""
    async with httpx.AsyncClient(base_url=arena.url, timeout=10) as http:
        users = [await new_player(http, f"Gun{i}") for i in range(len(wires))]
        for user in users:
            async def armed(user: dict[str, Any] = user) -> bool:  # progression provisioned
                me = (await http.get("/v1/me", headers=bearer(user["token"]))).json()
                return bool(me["progression"])

            await eventually(armed, "the pistol unlocked")
    async with AsyncExitStack() as stack:
        reading = await stack.enter_async_context(trio.open_nursery())
        found = []
        for user, wire in zip(users, wires, strict=True):
            conn = await stack.enter_async_context(connect(
                ws_url(arena.url, user["token"]),
                subprotocols=[v2.SUBPROTOCOL] if wire == "v2" else None))
            fighter = Fighter(user, Client(conn, wire))
            reading.start_soon(fighter.client.run)
            await fighter.client.join(fighter.id)
            found.append(fighter)
        yield found
        reading.cancel_scope.cancel()


async def fire(shooter: Fighter, at_tick: int, aim: tuple[float, float] = (1.0, 0.0),
               weapon: str = "pistol") -> int:
    return await shooter.client.send({"type": "fire", "weapon": weapon, "ax": aim[0],
                                      "ay": aim[1], "tick": at_tick})


async def kill(shooter: Fighter, target: Fighter) -> list[dict[str, Any]]:
    """The target brought in front of the shooter and shot dead (4 x 25 with the
    pistol, a shot every 10 ticks); the deaths its client saw so far."""
    me = target.client.at(target.id)
    assert me is not None
    if abs(me["x"]) + abs(me["y"]) > 100:  # a move is at most WORLD_MAX_STEP long
        await target.client.moved_to(target.id, me["x"] / 2, me["y"] / 2)
    await target.client.moved_to(target.id, 3.0, 0.0)
    deaths = len(target.client.events)
    for _ in range(4):
        ready = shooter.client.tick + 11
        await fire(shooter, shooter.client.tick)
        await shooter.client.past(ready)
    return await target.client.until(
        lambda: [e for e in target.client.events[deaths:] if e["kind"] == "death"],
        "the death")


def hits(client: Client, victim: str) -> list[dict[str, Any]]:
    return [e for e in client.events if e["kind"] == "hit" and e["victim"] == victim]


async def test_a_shot_hits_where_the_target_was_at_the_claimed_tick(arena: Running) -> None:
    async with fighters(arena, "v1", "v1") as (shooter, target):
        await target.client.moved_to(target.id, 10.0, 0.0)  # in the line of fire
        there = await shooter.client.until(
            lambda: (e := shooter.client.at(target.id)) and e["x"] == 10.0 and
            shooter.client.tick, "the target seen in the line of fire")
        await target.client.moved_to(target.id, 10.0, 60.0)  # and away since
        await shooter.client.until(lambda: (e := shooter.client.at(target.id)) and
                                   e["y"] == 60.0, "the target seen gone")
        await fire(shooter, there)  # at the tick the shooter's client showed it there
        hit = await shooter.client.until(lambda: hits(shooter.client, target.id),
                                         "the hit")
    assert hit == [{"kind": "hit", "shooter": shooter.id, "victim": target.id,
                    "weapon": "pistol", "damage": 25, "hp": 75}]


async def test_a_claim_older_than_the_window_is_clamped_and_misses(arena: Running) -> None:
    async with fighters(arena, "v1", "v1") as (shooter, target):
        await target.client.moved_to(target.id, 10.0, 0.0)
        long_ago = await shooter.client.until(
            lambda: (e := shooter.client.at(target.id)) and e["x"] == 10.0 and
            shooter.client.tick, "the target seen in the line of fire")
        gone = await target.client.moved_to(target.id, 10.0, 60.0)
        await shooter.client.past(gone + REWIND_TICKS + 2)  # it left before the window
        seq = await fire(shooter, long_ago)  # where it was, a claim the window clamps
        await shooter.client.until(lambda: (e := shooter.client.at(shooter.id)) and
                                   e["seq"] >= seq, "the shot taken")
        await shooter.client.past(shooter.client.tick + 2)
        assert hits(shooter.client, target.id) == []
        assert shooter.client.at(target.id)["hp"] == 100  # type: ignore[index]


async def test_fire_faster_than_the_weapon_allows_is_refused(arena: Running) -> None:
    async with fighters(arena, "v1") as (shooter,):
        now = shooter.client.tick
        await fire(shooter, now, (0.0, 1.0))
        second = await fire(shooter, now, (0.0, 1.0))  # the pistol fires twice a second
        refused = await shooter.client.until(lambda: shooter.client.errors, "a refusal")
    assert [(e["code"], e["seq"]) for e in refused] == [("rate_limited", second)]


async def test_a_weapon_not_unlocked_is_forbidden(arena: Running) -> None:
    async with fighters(arena, "v2") as (shooter,):
        seq = await fire(shooter, shooter.client.tick, weapon="rifle")  # the pistol only
        refused = await shooter.client.until(lambda: shooter.client.errors, "a refusal")
    assert refused[0]["code"] == "forbidden" and "rifle" in refused[0]["message"]
    assert refused[0]["seq"] == seq


async def test_a_wall_stops_a_shot_and_a_move(arena: Running) -> None:
    async with fighters(arena, "v1", "v1") as (shooter, target):
        await shooter.client.moved_to(shooter.id, 0.0, 30.0)
        await target.client.moved_to(target.id, 10.0, 30.0)  # the wall between
        seq = await fire(shooter, shooter.client.tick)
        await shooter.client.until(lambda: (e := shooter.client.at(shooter.id)) and
                                   e["seq"] >= seq, "the shot taken")
        await shooter.client.past(shooter.client.tick + 2)
        assert hits(shooter.client, target.id) == []
        await shooter.client.send({"type": "move", "dx": 10.0, "dy": 0.0})
        stopped = await shooter.client.until(
            lambda: (e := shooter.client.at(shooter.id)) and e["x"] > 0 and e, "the move")
    assert stopped["y"] == 30.0
    assert 3.9 < stopped["x"] < 4.0, stopped  # just short of the wall


async def test_the_dead_cannot_move_or_fire_and_respawn_at_a_spawn_point(
    arena: Running
) -> None:
    async with fighters(arena, "v1", "v1") as (shooter, target):
        death = await kill(shooter, target)
        assert death[0]["killer"] == shooter.id and death[0]["victim"] == target.id
        move = await target.client.send({"type": "move", "dx": 1.0, "dy": 0.0})
        shot = await fire(target, target.client.tick, (-1.0, 0.0))
        refused = await target.client.until(lambda: len(target.client.errors) >= 2 and
                                            target.client.errors, "two refusals")
        assert [(e["code"], e["seq"]) for e in refused] == [("dead", move), ("dead", shot)]
        respawn = await target.client.until(
            lambda: [e for e in target.client.events if e["kind"] == "respawn"],
            "the respawn")
        back = await target.client.until(lambda: (e := target.client.at(target.id)) and
                                         e["hp"] == 100 and e, "full hit points")
    assert respawn == [{"kind": "respawn", "player": target.id, "x": SPAWN[0], "y": SPAWN[1]}]
    assert (back["x"], back["y"]) == tuple(SPAWN)


async def test_v1_and_v2_clients_see_the_same_hit_points_and_events(arena: Running) -> None:
    async with fighters(arena, "v1", "v1", "v2") as (shooter, target, watcher):
        await watcher.client.moved_to(watcher.id, 0.0, -10.0)  # out of the line of fire
        await target.client.moved_to(target.id, 3.0, 0.0)
        await fire(shooter, shooter.client.tick)
        for client in (shooter.client, watcher.client):
            await client.until(lambda c=client: (e := c.at(target.id)) and e["hp"] == 75,
                               "hit points 75")
            await client.until(lambda c=client: hits(c, target.id), "the hit")
    assert hits(shooter.client, target.id) == hits(watcher.client, target.id)


async def test_bad_fire_messages_get_the_errors_bad_moves_get(arena: Running) -> None:
    async with fighters(arena, "v1") as (shooter,):
        for bad in ({"weapon": "pistol", "ax": "1", "ay": 0, "tick": 1},
                    {"weapon": "bazooka", "ax": 1, "ay": 0, "tick": 1},
                    {"weapon": "pistol", "ax": 1, "ay": 0},
                    {"weapon": "pistol", "ax": 1, "ay": 0, "tick": -1},
                    {"weapon": "pistol", "ax": 1, "ay": [0], "tick": 1},
                    # Finite, but its length is not: a zone's process once died of it.
                    {"weapon": "pistol", "ax": 1.5e308, "ay": 1.5e308, "tick": 1}):
            await shooter.client.conn.send_message(orjson.dumps(
                {"type": "fire", "seq": 99, **bad}).decode())
        await shooter.client.conn.send_message(orjson.dumps(
            {"type": "move", "seq": 99, "dx": 1e301, "dy": 0}).decode())
        errors = await shooter.client.until(lambda: len(shooter.client.errors) >= 7 and
                                            shooter.client.errors, "seven errors")
        assert await fire(shooter, shooter.client.tick) > 0  # and it plays on
        await shooter.client.past(shooter.client.tick + 2)
    assert [e["code"] for e in errors] == ["validation_failed"] * 7
    assert "from -1e+300 to 1e+300" in errors[5]["message"], errors[5]
    assert "from -1e+300 to 1e+300" in errors[6]["message"], errors[6]


async def test_a_kill_counts_once_in_me_though_delivered_twice(arena: Running) -> None:
    async with fighters(arena, "v1", "v1") as (shooter, target):
        await kill(shooter, target)
    killed = await _stream_message(arena)  # the zone's announcement, as JetStream has it
    await _publish(arena, killed, msg_id=str(uuid.uuid4()))  # the same event, again
    async with httpx.AsyncClient(base_url=arena.url) as http:
        async def counted() -> tuple[Any, ...] | None:
            killer = (await http.get("/v1/me", headers=bearer(shooter.user["token"]))).json()
            victim = (await http.get("/v1/me", headers=bearer(target.user["token"]))).json()
            return (killer["player"]["kills"], victim["player"]["deaths"],
                    killer["progression"]["xp"]) if killer["player"]["kills"] else None

        assert await eventually(counted, "the kill counted") == (1, 1, 100)
        await eventually(lambda: _settled(arena), "the duplicate handled")
        assert await counted() == (1, 1, 100)
        # One fetched batch may hold an event twice (published again under another
        # message id): the services count it once all the same.
        again = uuid.uuid4()
        killer_id, victim_id = uuid.UUID(shooter.user["user_id"]), uuid.UUID(
            target.user["user_id"])
        await arena.services.pg.transact(count_kills, [(again, killer_id, victim_id)] * 2)
        await arena.services.pg.transact(award_kills, [(again, killer_id)] * 2)
        assert await counted() == (2, 2, 200)
        # A kill of a user whose provisioning is behind (no row yet) fails whole, to be
        # delivered again: it was once marked counted, and lost.
        later, stranger = uuid.uuid4(), uuid.uuid4()
        with pytest.raises(NotProvisioned):
            await arena.services.pg.transact(count_kills, [(later, killer_id, stranger)])
        with pytest.raises(NotProvisioned):
            await arena.services.pg.transact(award_kills, [(later, stranger)])
        assert await counted() == (2, 2, 200)
        await arena.services.pg.transact(count_kills, [(later, killer_id, victim_id)])
        await arena.services.pg.transact(award_kills, [(later, killer_id)])
        assert await counted() == (3, 3, 300)


async def _stream_message(arena: Running) -> bytes:
    async def last(nc: NatsClient) -> bytes:
        message = await nc.jetstream().get_last_msg("COMBAT", COMBAT_KILLED)
        return bytes(message.data or b"")

    found: bytes = await trio_asyncio.aio_as_trio(last)(arena.services.bus._nc)
    return found


async def _publish(arena: Running, payload: bytes, msg_id: str) -> None:
    async def send(nc: NatsClient) -> None:
        await nc.jetstream().publish(COMBAT_KILLED, payload, headers={"Nats-Msg-Id": msg_id})

    await trio_asyncio.aio_as_trio(send)(arena.services.bus._nc)


async def _fill_stream(arena: Running) -> None:
    """The COMBAT stream made full: it refuses what is published to it (a stream at its
    limits with the discard policy "new"), until ensure_streams sets it back."""
    async def fill(nc: NatsClient) -> None:
        js = nc.jetstream()
        info = await js.stream_info("COMBAT")
        await js.update_stream(dataclasses.replace(
            info.config, max_msgs=info.state.messages, discard=DiscardPolicy.NEW))

    await trio_asyncio.aio_as_trio(fill)(arena.services.bus._nc)


async def _settled(arena: Running) -> bool:
    async def infos(nc: NatsClient) -> list[Any]:
        js = nc.jetstream()
        return [await js.consumer_info("COMBAT", durable) for durable in KILL_SERVICES]

    found = await trio_asyncio.aio_as_trio(infos)(arena.services.bus._nc)
    return not any(info.num_pending or info.num_ack_pending for info in found)




async def test_a_kill_jetstream_cannot_take_waits_in_its_process(arena: Running) -> None:
    """docs/rules.md, "Facts": a kill JetStream does not acknowledge waits in the zone's
    process (outpost_facts_pending: what a crash would lose) and is published, once,
    when JetStream takes it again."""
    async def counted(name: str) -> float:
        return await metric(f"{arena.url}/metrics", name)

    async with fighters(arena, "v1", "v1") as (shooter, target):
        await kill(shooter, target)  # the first: published, its stream there
        assert await eventually(lambda: counted("outpost_facts_published_total"),
                                "the first kill published") == 1
        await _fill_stream(arena)
        try:
            await target.client.until(lambda: (e := target.client.at(target.id)) and
                                      e["hp"] == 100, "the target back at a spawn point")
            death = await kill(shooter, target)
            assert await eventually(lambda: counted("outpost_facts_pending"),
                                    "the kill held in the zone's process") == 1
            assert await counted("outpost_facts_published_total") == 1
        finally:
            await arena.services.bus.ensure_streams(STREAMS)  # JetStream takes it again
    async def both_published() -> bool:
        return await counted("outpost_facts_published_total") == 2

    await eventually(both_published, "the kill published")
    assert await counted("outpost_facts_pending") == 0
    killed = orjson.loads(await _stream_message(arena))
    assert (killed["killer_character_id"], killed["victim_character_id"]) == (
        death[0]["killer"], death[0]["victim"])
