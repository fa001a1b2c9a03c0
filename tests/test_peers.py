"""The messages between processes (zones/contract.py; docs/protocol.md, "Zones across
processes"): each one typed, versioned, encoded and decoded in one place. Whatever
arrives on a subject a process listens to (a zone of another version, a malformed
message, anything that can publish on NATS), the process refuses it, logs and counts
it, and goes on serving: a join reply with a missing key once raised KeyError into the
edge and ended the api process.

Rules: properties (Hypothesis) for the decoders and the mirror's `apply`, pure logic;
then a real in-process api with its zone on the session's NATS, fed garbage on every
subject it reads, and asked to join a character through a zone that answers garbage.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from nats.js import JetStreamContext

from bus import subjects
from bus.directory import BUCKET
from characters.store import move_to_zone
from server.config import Settings
from server.process import Roles, Running
from tests.helpers import eventually, metric, running_process, use_api_loop
from tests.world import connect, error_for, joined, new_player, still_open, ws_url
from zones import contract
from zones.grid import Grid
from zones.host import RemoteMember, ZoneHost, in_order
from zones.interest import Interest
from zones.mirror import Mirror

DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    "join": contract.JOIN_REQUESTS, "join reply": contract.JOIN_REPLIES,
    "inputs": contract.INPUTS, "news": contract.NEWS, "directory entry": contract.HELD,
    "feed": contract.FEEDS, "roster request": contract.ROSTER_ASKED,
    "roster": contract.ROSTERS, "admin": contract.ADMIN}

texts = st.text(max_size=20)
finite = st.floats(-1e300, 1e300)
coordinates = st.floats(-1e9, 1e9)  # a zone's bounds are within ±1e9 (server/config.py)
counts = st.integers(0, 2**32)
values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | texts
peers = st.one_of(
    st.builds(contract.JoinRequest, texts, texts, texts, coordinates, coordinates,
              st.booleans(), texts, texts, texts, counts, st.lists(texts, max_size=3)),
    st.builds(contract.Admitted, counts, finite, coordinates, coordinates, counts),
    st.builds(contract.JoinRefused, texts, texts),
    st.builds(contract.Inputs, texts, st.lists(st.tuples(texts, finite, finite, counts)),
              st.lists(st.tuples(texts, texts, counts, st.lists(values, max_size=4))),
              st.lists(st.tuples(texts, texts))),
    st.builds(contract.News, st.lists(st.tuples(texts, texts, texts)),
              st.lists(st.tuples(texts, texts, texts, texts, texts, counts))),
    st.builds(contract.Held, texts, counts, counts, finite, st.builds(
        contract.TickTimes, st.none() | finite, st.none() | finite, st.none() | finite)),
    st.builds(contract.RosterAsked),
    st.builds(contract.Roster, counts, st.lists(st.tuples(
        texts, texts, texts, coordinates, coordinates, st.dictionaries(texts, values)),
        max_size=3)),
    st.builds(contract.Kick, texts, texts, texts),
    st.builds(contract.AccountChanged, texts, st.booleans()),
    st.builds(contract.SessionEnded, texts, texts))


@given(peers)
def test_every_message_reads_back_as_it_was_written(message: contract.Peer) -> None:
    refusals = contract.Refusals()
    decoder: dict[type, msgspec.msgpack.Decoder[Any]] = {
               contract.JoinRequest: contract.JOIN_REQUESTS,
               contract.Admitted: contract.JOIN_REPLIES,
               contract.JoinRefused: contract.JOIN_REPLIES, contract.Inputs: contract.INPUTS,
               contract.News: contract.NEWS, contract.Held: contract.HELD,
               contract.RosterAsked: contract.ROSTER_ASKED, contract.Roster: contract.ROSTERS,
               contract.Kick: contract.ADMIN, contract.AccountChanged: contract.ADMIN,
               contract.SessionEnded: contract.ADMIN}
    data = contract.encode(message)
    assert refusals.decode(decoder[type(message)], data, "any") == message


@given(st.binary(max_size=400) | peers.map(contract.encode).map(lambda b: b[:-1]))
def test_any_bytes_are_a_message_or_a_refusal(data: bytes) -> None:
    for what, decoder in DECODERS.items():
        refusals = contract.Refusals()
        message = refusals.decode(decoder, data, what)  # never raises
        assert (message is None) == (sum(refusals.counts.values()) == 1)


def test_a_message_of_another_kind_or_version_is_refused() -> None:
    refusals = contract.Refusals()
    inputs = contract.encode(contract.Inputs("api", [], [], []))
    assert refusals.decode(contract.JOIN_REQUESTS, inputs, "join") is None
    newer = inputs.replace(b"zone.inputs/2", b"zone.inputs/3")
    assert refusals.decode(contract.INPUTS, newer, "inputs") is None
    feed = Interest("z1", Grid(0, 0, 10, 10, 0), epoch="e").feed(complete=True)
    assert refusals.decode(contract.FEEDS, feed, "feed") is not None
    assert refusals.decode(contract.FEEDS, feed.replace(b"\xa1v\x02", b"\xa1v\x03"),
                           "feed") is None
    assert refusals.counts == {("join", "invalid"): 1, ("inputs", "invalid"): 1,
                               ("feed", "invalid"): 1}


entries = st.tuples(st.integers(0, 6), st.sampled_from(["a", "b", "c"]), st.just("N"))
# Positions past what a zone may hold (a float32 cannot hold 1e39: the mirror's snapshots
# would fail to encode) must be refused by the decoder, never reach the mirror.
# [eid, x, y, seq, hp] of a game with one field, or an entry of another shape.
updates = st.one_of(
    st.tuples(st.integers(0, 6), st.floats(-1e40, 1e40, allow_nan=False),
              st.floats(-20, 20), st.integers(0, 50), st.integers(0, 100)).map(list),
    st.lists(st.integers(0, 6) | st.text(max_size=3), max_size=6))
events = st.tuples(st.sampled_from(["hit", "death"]), st.lists(st.integers(0, 6), max_size=2),
                   st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9)))
feeds = st.builds(contract.Feed, st.just(contract.FEED_VERSION), st.sampled_from(["e1", "e2"]),
                  st.just("snapshot"), st.sampled_from(["z1", "z2"]), st.integers(0, 5),
                  st.none() | st.integers(0, 5), st.lists(entries, max_size=4),
                  st.lists(updates, max_size=6), st.lists(st.integers(0, 6), max_size=3),
                  st.lists(events, max_size=2))


def _held(mirror: Interest) -> object:
    return {eid: (e.character_id, e.x, e.y, e.seq, e.fields)
            for eid, e in mirror.entities.items()}


@given(st.lists(feeds, max_size=8))
def test_a_mirror_takes_any_feed_or_refuses_it_whole(sequence: list[contract.Feed]) -> None:
    """As a RemoteZone takes its feed: a feed that does not decode is refused; one that
    does not hold together (another zone's, an update of an eid nobody entered, an eid
    that leaves and enters at once) raises ValueError and changes nothing; any other is
    applied or waited out."""
    mirror = Mirror("z1", Grid(-10, -10, 10, 10, 5), epoch="", fields=("hp",))
    refusals = contract.Refusals()
    for sent in sequence:
        feed = refusals.decode(contract.FEEDS, msgspec.msgpack.encode(sent), "feed")
        if feed is None:
            continue
        before = _held(mirror), mirror.tick
        try:
            applied = mirror.apply(feed)
        except ValueError:
            assert (_held(mirror), mirror.tick) == before
            continue
        assert applied or (_held(mirror), mirror.tick) == before
        for cell in list(mirror.occupied):  # what it then serves encodes
            payload, _ = mirror.view(cell).encoded("v2", None)
            msgspec.msgpack.decode(payload)


# --- a real process fed garbage --------------------------------------------------------------

@pytest.fixture
async def world(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Running]:
    async with running_process(settings, nursery, Roles(zones=("z1",))) as running:
        use_api_loop(running)
        yield running


GARBAGE = [b"", b"\xc1", b"{}", b"\x81\xa4kind\xabzone.join/9", b"\x91" * 2000,
           msgspec.msgpack.encode({"kind": "zone.inputs/2", "api": "x", "moves": [[1]]})]


async def refused(world: Running, what: str) -> float:
    return await metric(f"{world.url}/metrics", "outpost_peer_messages_refused_total",
                        message=what)


async def test_garbage_on_every_subject_is_refused_and_counted(world: Running) -> None:
    bus = world.services.bus
    far = f"z{uuid.uuid4().hex[:8]}"
    world.services.world.link(far)  # a zone in no process: its feed is listened to
    async with httpx.AsyncClient(base_url=world.url) as http:
        me = await new_player(http)
    async with connect(ws_url(world.url, me["token"])) as conn:
        await joined(conn, me["character"]["id"])
        for data in GARBAGE:
            answer = contract.JOIN_REPLIES.decode(
                await bus.request(subjects.zone_join("z1"), data, timeout_s=5))
            assert answer == contract.JoinRefused("validation_failed",
                                                  "a join this zone cannot read")
            for subject in (subjects.zone_input("z1"), subjects.zone_snapshot(far),
                            subjects.api_events(world.services.world.instance_id),
                            subjects.zone_roster("z1"), subjects.ADMIN_SESSIONS):
                await bus.publish_many(subject, [data])

        async def put(js: JetStreamContext) -> None:
            await (await js.key_value(BUCKET)).put(far, b"\x81\xa4kind\xa3odd")

        await bus.on_jetstream(put)
        n = len(GARBAGE)
        for what in ("join", "inputs", "feed", "news", "directory entry", "roster request",
                     "admin"):
            async def counted(what: str = what, n: int = n) -> bool:
                return await refused(world, what) == (1 if what == "directory entry" else n)

            await eventually(counted, f"{n} {what} messages refused")
        await still_open(conn)  # the player plays on
        listed = {z["zone"] for z in world.services.world.zone_list()}
        assert far not in listed, "a directory entry nobody can read names no zone"

        async def purge(js: JetStreamContext) -> None:
            await (await js.key_value(BUCKET)).purge(far)

        # The session's NATS is shared: the next process to watch the directory would
        # log the entry it cannot read (tests/test_http_guard.py counts such lines).
        await bus.on_jetstream(purge)


async def test_a_zone_that_answers_garbage_is_unavailable(
    world: Running, settings: Settings
) -> None:
    """The join reply once read with reply["eid"]: a KeyError that ended the api."""
    fake = f"z{uuid.uuid4().hex[:8]}"
    bus = world.services.bus
    async with httpx.AsyncClient(base_url=world.url) as http:
        me = await new_player(http)
    character_id = uuid.UUID(me["character"]["id"])
    await world.services.pg.transact(move_to_zone, character_id, fake, 0.0, 0.0)
    async with bus.subscription(subjects.zone_join(fake)) as joins, \
            trio.open_nursery() as nursery:
        async def answer_garbage() -> None:
            async for message in joins:
                await bus.publish_many(message.reply, [b'{"tick": 1}'])

        nursery.start_soon(answer_garbage)
        async with connect(ws_url(world.url, me["token"])) as conn:
            error = await error_for(conn, {"type": "join", "character_id": str(character_id)})
            assert error["code"] == "zone_unavailable", error
            await still_open(conn)
        nursery.cancel_scope.cancel()
    assert await refused(world, "join reply") == 1


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=40))
def test_a_drain_is_taken_in_each_characters_order(sent: list[tuple[str, bool]]) -> None:
    """Moves and the game's other inputs travel in two lists of one zone.inputs
    message; the zone takes each character's as its client sent them (by seq), and
    every input once."""
    seqs: dict[str, int] = {}
    moves: list[tuple[str, float, float, int]] = []
    actions: list[tuple[str, str, int, list[contract.Value]]] = []
    for character_id, is_move in sent:
        seqs[character_id] = seq = seqs.get(character_id, 0) + 1
        if is_move:
            moves.append((character_id, 1.0, 0.0, seq))
        else:
            actions.append((character_id, "fire", seq, ["pistol", 1.0, 0.0, 0]))
    body = contract.Inputs(api="a", moves=moves, actions=actions, leaves=[])
    taken = [(moves[i][0], moves[i][3]) if is_move else (actions[i][0], actions[i][2])
             for is_move, i in in_order(body)]
    assert sorted(taken) == sorted((c, s) for c, s in
                                   [(m[0], m[3]) for m in moves] + [(a[0], a[2]) for a in actions])
    for character_id in seqs:
        theirs = [seq for c, seq in taken if c == character_id]
        assert theirs == sorted(theirs)


def test_a_long_refusal_still_reaches_the_api_process() -> None:
    """A game's refusal longer than the news carries is cut, not sent to be refused whole
    (with the replaced sessions the same news tells of). Pure logic: no world runs."""
    host = ZoneHost("z1", SimpleNamespace(directory=None), None)  # type: ignore[arg-type]
    member = RemoteMember(host, "api-1", "session-1", "character-1")
    member.refused("dead", "x" * 5000, 7)
    host.replaced("api-1", "session-0")
    news = contract.Refusals().decode(contract.NEWS, contract.encode(host._news["api-1"]),
                                      "news")
    assert news is not None
    assert news.refused == [("z1", "character-1", "session-1", "dead", "x" * 200, 7)]


def test_a_roster_fits_in_a_nats_message_whatever_the_games_fields() -> None:
    """A game may replicate eleven texts of 200 characters: a thousand such players are
    ~2.5 MB, and one message over NATS's max_payload makes the server close the zone's
    connection. The reply lists as many as fit, and says how many there are."""
    fields: dict[str, contract.Value] = {f"f{i}": "x" * 200 for i in range(11)}
    players = [(f"c{i}", f"u{i}", f"name{i}", 1.0, 2.0, fields) for i in range(1000)]
    reply = contract.roster_reply(1500, players)
    assert len(reply) <= contract.ROSTER_MOST_BYTES
    roster = contract.ROSTERS.decode(reply)
    assert roster.total == 1500 and 0 < len(roster.players) < 1000
    assert [p[0] for p in roster.players] == [f"c{i}" for i in range(len(roster.players))]
    small = contract.ROSTERS.decode(contract.roster_reply(2, players[:2]))
    assert len(small.players) == 2
