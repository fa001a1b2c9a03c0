"""Unit tests of zones/interest.py and zones/snapshots.py: the grid's promise (everyone
within the radius is seen, nobody farther than twice it on either axis), the views'
forms (v1 JSON, v2 complete, v2 deltas that a client's view can follow tick after
tick, through moves across cells, joins, leaves and reused eids), shared bytes, and a
mirror fed by the zone's feed that serves the same snapshots.

Rules: pure logic, no sockets, no trio; randomness from a fixed seed. Clients are
bench/v2.py's reference decoder.
"""

from __future__ import annotations

import json
import random
import struct

import pytest

from bench.v2 import Follower, OutOfStep, OwnEntry, PlayerView, decode
from zones.contract import FEEDS
from zones.grid import Grid
from zones.interest import V1, V2, Base, Interest
from zones.mirror import Mirror
from zones.simulation import Eids
from zones.snapshots import Headers, Run, text, uint, update_entry, update_head

BOUNDS = (-1000.0, -1000.0, 1000.0, 1000.0)


def interest(radius: float, zone: str = "z1") -> Interest:
    return Interest(zone, Grid(*BOUNDS, radius), epoch="e1")


def test_the_grid_shows_everyone_within_the_radius_and_nobody_past_twice_it() -> None:
    rng = random.Random(7)
    for radius in (37.5, 100.0, 450.0):
        grid = Grid(*BOUNDS, radius)
        points = [(rng.uniform(-1000, 1000), rng.uniform(-1000, 1000)) for _ in range(400)]
        points += [(1000.0, 1000.0), (-1000.0, -1000.0), (1000.0, -1000.0)]
        for ax, ay in points:
            block = set(grid.block(grid.cell(ax, ay)))
            for bx, by in points:
                seen = grid.cell(bx, by) in block
                if (ax - bx) ** 2 + (ay - by) ** 2 <= radius ** 2:
                    assert seen, (radius, (ax, ay), (bx, by))
                if abs(ax - bx) > 2 * radius or abs(ay - by) > 2 * radius:
                    assert not seen, (radius, (ax, ay), (bx, by))


def test_radius_zero_is_one_cell_that_sees_the_whole_zone() -> None:
    grid = Grid(*BOUNDS, 0.0)
    assert {grid.cell(-1000, 1000), grid.cell(0, 0), grid.cell(999, -999)} == {0}
    assert grid.block(0) == (0,)


def test_msgpack_pieces_are_the_shortest_forms() -> None:
    assert [uint(n) for n in (0, 127, 128, 255, 256, 65535, 65536)] == [
        b"\x00", b"\x7f", b"\xcc\x80", b"\xcc\xff", b"\xcd\x01\x00", b"\xcd\xff\xff",
        b"\xce\x00\x01\x00\x00"]
    assert text("hi") == b"\xa2hi"
    assert text("x" * 40) == b"\xd9\x28" + b"x" * 40
    assert update_entry(update_head(3), 1.5, -2.0, 9) == b"\x94\x03\xca" + struct.pack(
        ">f", 1.5) + b"\xca" + struct.pack(">f", -2.0) + b"\x09"
    assert decode(Headers("z1").v2(7, None, [Run(0, b"")], [], [5, 300])) == {
        "type": "snapshot", "zone": "z1", "tick": 7, "base": None, "enter": [],
        "update": [], "leave": [5, 300]}


def test_the_worked_example_of_docs_protocol_md() -> None:
    """The snapshot docs/protocol.md spells out in hex."""
    zone = interest(0.0)
    zone.enter(0, "8c2e3b4a-0000-4000-8000-000000000001", "Ada", 1.5, -2.0, 0)
    zone.seal(41)
    zone.update(0, 2.5, -2.0, 17)
    zone.seal(42)
    delta, _ = zone.view(0).encoded(V2, ((zone.epoch, 0), 41))
    assert delta.hex(" ") == (
        "87 a4 74 79 70 65 a8 73 6e 61 70 73 68 6f 74 a4 7a 6f 6e 65 a2 7a 31 a4 74 69 63 6b "
        "2a a4 62 61 73 65 29 a5 65 6e 74 65 72 90 a6 75 70 64 61 74 65 91 94 00 ca 40 20 00 "
        "00 ca c0 00 00 00 11 a5 6c 65 61 76 65 90")
    assert decode(delta) == {"type": "snapshot", "zone": "z1", "tick": 42, "base": 41,
                             "enter": [], "update": [[0, 2.5, -2.0, 17]], "leave": []}


class World:
    """Random players walking, joining and leaving, driving an Interest as a zone does."""

    def __init__(self, radius: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.zone = interest(radius)
        self.eids = Eids()
        self.tick = 0
        self.players: dict[int, list[float]] = {}

    def join(self) -> int:
        eid = self.eids.take()
        x, y = self.rng.uniform(-300, 300), self.rng.uniform(-300, 300)
        self.players[eid] = [x, y, 0]
        self.zone.enter(eid, f"char-{eid}-{self.tick}", f"name{eid}", x, y, 0)
        return eid

    def with_players(self, n: int) -> World:
        """`n` players joined, and sealed in a tick."""
        for _ in range(n):
            self.join()
        self.seal()
        return self

    def seal(self) -> None:
        self.tick += 1
        self.zone.seal(self.tick)

    def step(self, *, churn: float = 0.05) -> None:
        for eid, player in list(self.players.items()):
            roll = self.rng.random()
            if roll < churn / 2:
                del self.players[eid]
                self.zone.leave(eid)
                self.eids.give_back(eid)
            elif roll < 0.6:
                player[0] = min(max(player[0] + self.rng.uniform(-40, 40), -1000), 1000)
                player[1] = min(max(player[1] + self.rng.uniform(-40, 40), -1000), 1000)
                player[2] += 1
                self.zone.update(eid, player[0], player[1], int(player[2]))
        for _ in range(self.rng.randint(0, 2)):
            self.join()
        self.seal()
        self.eids.wake()


def seen_by(zone: Interest, cell: int) -> set[str]:
    """The character ids in the block around `cell`, from the zone's own entities."""
    block = set(zone.grid.block(cell))
    return {e.character_id for e in zone.entities.values() if e.cell in block}


@pytest.mark.parametrize("radius", [0.0, 100.0])
def test_a_client_that_follows_deltas_sees_what_a_complete_snapshot_shows(
    radius: float,
) -> None:
    world = World(radius, seed=11).with_players(30)
    watcher = next(iter(world.players))  # a client: its view, and what it was last sent
    client, since = PlayerView(), None
    deltas = 0
    for _ in range(300):
        world.step()
        if watcher not in world.players:
            watcher = world.join()  # its character came back: a new eid, a new view
            world.seal()
        cell = world.zone.cell_of(watcher)
        assert cell is not None
        view = world.zone.view(cell)
        payload, since = view.encoded(V2, since)
        snapshot = decode(payload)
        deltas += snapshot["base"] is not None
        client.apply(snapshot)
        complete = PlayerView()
        complete.apply(decode(view.encoded(V2, None)[0]))
        assert client.positions() == complete.positions()
        assert set(client.positions()) == seen_by(world.zone, cell)
        v1 = json.loads(view.encoded(V1, None)[0])
        assert {p["id"]: (p["x"], p["y"], p["seq"]) for p in v1["players"]} == {
            cid: (pytest.approx(x, abs=1e-3), pytest.approx(y, abs=1e-3), seq)
            for cid, (x, y, seq) in complete.positions().items()}
    assert deltas > 200, "most snapshots were deltas"


def test_a_delta_is_only_against_the_tick_just_before_of_the_same_block() -> None:
    zone = interest(100.0)
    zone.enter(0, "a", "A", 0.0, 0.0, 0)
    zone.seal(1)
    view = zone.view(zone.grid.cell(0, 0))
    _, base = view.encoded(V2, None)
    zone.update(0, 1.0, 0.0, 1)
    zone.seal(2)
    here = zone.view(zone.grid.cell(0, 0))
    assert decode(here.encoded(V2, base)[0])["base"] == 1
    older: Base = (base[0], 0)
    assert decode(here.encoded(V2, older)[0])["base"] is None
    elsewhere = zone.view(zone.grid.cell(500, 500))
    assert decode(elsewhere.encoded(V2, base)[0])["base"] is None, "another block"
    other_run: Base = (("another run", base[0][1]), 1)  # type: ignore[index]
    assert decode(here.encoded(V2, other_run)[0])["base"] is None


def test_a_view_encoded_after_a_newer_tick_is_sealed_is_the_newer_one() -> None:
    """A member behind on reading starts its queued view late: it gets the zone as it is
    now, consistently, never a delta built of one tick's changes under another's name."""
    zone = interest(0.0)
    zone.enter(0, "a", "A", 0.0, 0.0, 0)
    zone.seal(1)
    _, base = zone.view(0).encoded(V2, None)
    zone.update(0, 1.0, 0.0, 1)
    zone.seal(2)
    queued = zone.view(0)  # tick 2's view, queued behind something else...
    zone.update(0, 2.0, 0.0, 2)
    zone.seal(3)  # ...and started only now
    payload, sent = queued.encoded(V2, base)
    assert decode(payload)["tick"] == 3 and decode(payload)["base"] is None
    assert decode(payload)["update"] == [[0, 2.0, 0.0, 2]]
    assert sent[1] == 3
    assert json.loads(queued.encoded(V1, None)[0])["tick"] == 3


def test_members_of_a_block_share_the_bytes_and_a_quiet_cell_is_not_rebuilt() -> None:
    zone = interest(100.0)
    zone.enter(0, "a", "A", 0.0, 0.0, 0)
    zone.enter(1, "b", "B", 10.0, 0.0, 0)
    zone.enter(2, "far", "Far", 900.0, 900.0, 0)
    zone.seal(1)
    cell = zone.grid.cell(0, 0)
    assert zone.view(cell) is zone.view(cell)
    first = zone.view(cell).encoded(V2, None)[0]
    assert zone.view(cell).encoded(V2, None)[0] is first
    far_runs = zone.runs(zone.grid.cell(900, 900))
    zone.update(0, 1.0, 0.0, 1)
    zone.seal(2)
    assert zone.runs(zone.grid.cell(900, 900)) is far_runs


def test_a_player_that_joins_and_leaves_between_ticks_was_never_there() -> None:
    zone = interest(0.0)
    zone.enter(0, "a", "A", 0.0, 0.0, 0)
    zone.seal(1)
    _, base = zone.view(0).encoded(V2, None)
    zone.enter(1, "ghost", "Ghost", 5.0, 5.0, 0)
    zone.leave(1)
    zone.seal(2)
    delta = decode(zone.view(0).encoded(V2, base)[0])
    assert (delta["enter"], delta["update"], delta["leave"]) == ([], [], [])


def normal(payload: bytes, wire: str) -> dict[str, object]:
    """A snapshot with its arrays in one order (the order within one carries nothing)."""
    if wire == V1:
        body = json.loads(payload)
        body["players"].sort(key=lambda p: p["id"])
        return dict(body)
    body = decode(payload)
    for key in ("enter", "update"):
        body[key].sort()
    body["leave"].sort()
    return body


def test_a_mirror_fed_by_the_zone_serves_the_same_snapshots() -> None:
    world = World(100.0, seed=5).with_players(40)
    mirror = Mirror("z1", Grid(*BOUNDS, 100.0), epoch="")
    assert not mirror.apply(FEEDS.decode(world.zone.feed(complete=False))), "a delta first: wait"
    assert mirror.apply(FEEDS.decode(world.zone.feed(complete=True)))
    for tick in range(60):
        world.step()
        assert mirror.apply(FEEDS.decode(world.zone.feed(complete=tick % 20 == 0)))
        assert mirror.tick == world.zone.tick
        for cell in set(world.zone.occupied):
            for since in (None, ((world.zone.epoch, cell), world.zone.tick - 1)):
                for wire in (V1, V2):
                    ours = world.zone.view(cell).encoded(wire, since)[0]
                    theirs = mirror.view(cell).encoded(wire, since)[0]
                    assert normal(theirs, wire) == normal(ours, wire)
    world.step()  # this tick's feed is lost on the way
    world.step()
    assert not mirror.apply(FEEDS.decode(world.zone.feed(complete=False)))
    world.step()
    assert mirror.apply(FEEDS.decode(world.zone.feed(complete=True)))
    assert {e.character_id for e in mirror.entities.values()} == \
        {e.character_id for e in world.zone.entities.values()}


def test_a_view_refuses_to_be_followed_out_of_step() -> None:
    client = PlayerView()
    with pytest.raises(OutOfStep):
        client.apply({"type": "snapshot", "tick": 5, "base": 4, "enter": [], "update": [],
                      "leave": []})


def test_the_swarm_finds_its_own_entry_without_decoding() -> None:
    zone = interest(0.0)
    for eid in range(300):
        zone.enter(eid, f"c{eid}", f"n{eid}", eid + 0.5, -2.0 * eid, eid * 3)
    zone.seal(1)
    payload = zone.view(0).encoded(V2, None)[0]
    assert [OwnEntry(eid).entry(payload) for eid in (0, 127, 128, 299)] == [
        (0, 0.5, -0.0), (381, 127.5, -254.0), (384, 128.5, -256.0), (897, 299.5, -598.0)]
    assert OwnEntry(300).entry(payload) is None


def test_the_swarms_follower_applies_what_a_view_applies_and_names_the_rest() -> None:
    """bench/v2.py `Follower`: the check a swarm makes of every frame of every client."""
    world = World(100.0, seed=3).with_players(20)
    watcher = next(iter(world.players))
    follower, view, since = Follower(), PlayerView(), None
    for _ in range(100):
        world.step()
        if watcher not in world.players:
            break
        cell = world.zone.cell_of(watcher)
        assert cell is not None
        payload, since = world.zone.view(cell).encoded(V2, since)
        view.apply(decode(payload))
        assert follower.take(payload) is None
        assert follower.eids == {p.eid for p in view.players.values()}
    complete = world.zone.view(world.zone.grid.cell(0, 0)).encoded(V2, None)[0]
    assert "does not decode" in (Follower().take(complete[:-1]) or "")
    stale = Follower()
    assert stale.take(complete) is None
    tick = world.zone.tick
    delta = Headers("z1").v2(tick + 5, tick + 4, [], [], [])
    assert "a delta against tick" in (stale.take(delta) or "")
    assert stale.take(delta) is None, "deltas wait for a complete one"
    assert stale.take(complete) is None  # and then it follows again:
    unknown = Headers("z1").v2(tick + 1, tick, [],
                               [Run.of([update_entry(update_head(999), 0, 0, 1)])], [])
    assert "does not hold" in (stale.take(unknown) or "")
