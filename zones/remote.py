"""A zone run by another process, as the sessions of this one see it (over NATS).

Subjects (bus/subjects.py; docs/protocol.md, "Zones across processes"):
`zone.<id>.join` (request/reply), `zone.<id>.input` (this process's moves and
leaves), `zone.<id>.snapshot` (once per tick) and `api.<instance>.events`.

Inputs are batched: a session's move only appends to a list, and one task sends
whatever has accumulated in one message (one bridge crossing per drain, never
one per client). The zone publishes each tick once, for every process: its feed,
what changed in the whole zone (and every second, all of it). This process keeps
a mirror of the zone from it (an Interest, zones/interest.py) and serves its own
members the mirror's views, as the zone serves its local ones: one view per
block, each form encoded once. A feed that does not follow from what the mirror
holds (a message lost) is skipped until the next complete one, and the members
wait that long. When the feed stops for `DOWN_AFTER_S`, the
members are told the zone is unavailable (they stay connected) and are re-joined
every `REJOIN_EVERY_S` until the zone, restarted or taken over by a standby,
answers: they get a new welcome at their last saved positions.

Every message either way is a typed value of zones/contract.py; what does not decode
(a zone of another version, a malformed message) is refused and counted, never raised.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import trio

from bus import subjects
from bus.connection import Bus, BusUnavailable
from rules.api import Input, Scalar
from zones import contract
from zones.actor import Admission, Entrant, FanOut, Outlet, each_outlet
from zones.context import ZONE
from zones.errors import Refused, ZoneUnavailable
from zones.grid import Cell, Grid
from zones.link import Member
from zones.mirror import Mirror

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 2.0
DOWN_AFTER_S = 1.5
REJOIN_EVERY_S = 1.0
HEARTBEAT_S = 1.0  # an input message at least this often tells the zone we are alive
SHUTDOWN_SEND_S = 1.0
# Moves in one input message: ~60 bytes each, so a message stays far under NATS's
# max_payload (1 MB by default); a bigger one makes the server close the connection.
MOVES_PER_MESSAGE = 4096
# The game's other inputs: at most ~1 KB each (a few values, texts of 200 at most).
ACTIONS_PER_MESSAGE = 512


class RemoteZone:
    def __init__(self, zone_id: str, bus: Bus, instance_id: str, grid: Grid,
                 fields: tuple[str, ...], refusals: contract.Refusals,
                 fan_out: FanOut = each_outlet) -> None:
        self.zone_id = zone_id
        self._fan_out = fan_out
        self._bus = bus
        self._instance_id = instance_id
        self._mirror = Mirror(zone_id, grid, epoch="", fields=fields)
        self._refusals = refusals
        self._members: dict[str, Member] = {}
        self._eids: dict[str, int] = {}  # of the members' characters
        self._lost: set[str] = set()  # members to re-join once the zone answers again
        self._moves: list[tuple[str, float, float, int]] = []
        self._actions: list[tuple[str, str, int, list[Scalar]]] = []
        self._leaves: list[tuple[str, str]] = []
        self._wake = trio.Event()
        self._last_snapshot = 0.0
        self._last_rejoin = 0.0

    async def run(self) -> None:
        ZONE.set(self.zone_id)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_snapshots)
            nursery.start_soon(self._send_inputs)
            nursery.start_soon(self._watch)

    # --- the ZoneLink sessions use ---------------------------------------------------------

    async def join(self, entrant: Entrant, member: Member) -> Admission:
        profile = entrant.profile
        request = contract.encode(contract.JoinRequest(
            entrant.character_id, entrant.user_id, entrant.name, entrant.x, entrant.y,
            entrant.placed, self._instance_id, member.session_id, profile.character_class,
            profile.level, list(profile.weapons)))
        try:
            answer = await self._bus.request(subjects.zone_join(self.zone_id), request,
                                             timeout_s=JOIN_TIMEOUT_S)
        except BusUnavailable:
            raise ZoneUnavailable(f"zone {self.zone_id} is not available") from None
        reply = self._refusals.decode(contract.JOIN_REPLIES, answer, "join reply")
        if reply is None:
            raise ZoneUnavailable(f"zone {self.zone_id} answered what this process cannot read")
        if isinstance(reply, contract.JoinRefused):
            raise Refused(reply.error, reply.message)
        self._members[entrant.character_id] = member
        self._eids[entrant.character_id] = reply.eid
        self._lost.discard(entrant.character_id)
        self._last_snapshot = max(self._last_snapshot, trio.current_time())
        return Admission(self.zone_id, reply.tick, reply.tick_rate, reply.x, reply.y, reply.eid)

    def act(self, character_id: str, input: Input) -> None:
        if character_id in self._lost:
            return
        if input.kind == "move":  # most inputs: sent in a form of their own, smaller
            dx, dy = input.values
            assert isinstance(dx, float) and isinstance(dy, float)
            self._moves.append((character_id, dx, dy, input.seq))
        else:
            self._actions.append((character_id, input.kind, input.seq, list(input.values)))
        self._wake.set()

    def leave(self, character_id: str, member: Member) -> None:
        if self._members.get(character_id) is member:
            del self._members[character_id]
            del self._eids[character_id]
            self._lost.discard(character_id)
            self._leaves.append((character_id, member.session_id))
            self._wake.set()

    def refused(self, character_id: str, session_id: str, code: str, message: str,
                seq: int) -> None:
        """The game refused input `seq` of this session's: tell its client."""
        member = self._members.get(character_id)
        if member is not None and member.session_id == session_id:
            member.outlet.refused(code, message, seq)

    def replaced(self, character_id: str, session_id: str) -> None:
        """The zone says a newer session (maybe in another process) took this one over."""
        member = self._members.get(character_id)
        if member is not None and member.session_id == session_id:
            del self._members[character_id]
            del self._eids[character_id]
            member.outlet.replaced()

    # --- the tasks -------------------------------------------------------------------------

    async def _receive_snapshots(self) -> None:
        while True:
            try:
                await self._bus.connected_once.wait()
                async with self._bus.subscription(subjects.zone_snapshot(self.zone_id),
                                                  buffer=4) as feed:
                    async for message in feed:
                        self._last_snapshot = trio.current_time()
                        self._take(message.data)
            except BusUnavailable:
                await trio.sleep(REJOIN_EVERY_S)

    def _take(self, data: bytes) -> None:
        """Apply one tick of the zone's feed and give each member its view."""
        feed = self._refusals.decode(contract.FEEDS, data, "feed")
        if feed is None:
            return
        try:
            synced = self._mirror.apply(feed)
        except ValueError as exc:  # nothing applied: the next delta will not follow, either
            self._refusals.refuse("feed", "invalid", str(exc), len(data))
            return
        except Exception as exc:  # a feed the mirror choked on: it starts afresh
            self._refusals.refuse("feed", "invalid", repr(exc), len(data))
            self._mirror = Mirror(self.zone_id, self._mirror.grid, epoch="",
                                  fields=self._mirror.fields)
            return
        if not synced:
            return  # a tick went missing: wait for the next complete feed
        mirror = self._mirror
        by_cell: defaultdict[Cell, list[Outlet]] = defaultdict(list)
        for character_id, member in self._members.items():
            cell = mirror.cell_of(self._eids[character_id])
            if cell is not None:
                by_cell[cell].append(member.outlet)
        self._fan_out([(outlet, mirror.view(cell))  # a block's members one after another
                       for cell, outlets in by_cell.items() for outlet in outlets])

    async def _send_inputs(self) -> None:
        try:
            while True:
                with trio.move_on_after(HEARTBEAT_S):
                    await self._wake.wait()
                self._wake = trio.Event()
                if (self._moves or self._actions or self._leaves or self._members) \
                        and not await self._send():
                    await trio.sleep(REJOIN_EVERY_S)
        finally:
            with trio.move_on_after(SHUTDOWN_SEND_S) as scope:
                scope.shield = True  # the leaves of sessions that ended at shutdown
                if self._leaves:
                    await self._send()

    async def _send(self) -> bool:
        """Send what has gathered, in one message or, when a starved loop let a lot gather,
        in as many as NATS's payload limit needs; False if NATS did not take them."""
        moves, actions, leaves = self._moves, self._actions, self._leaves
        self._moves, self._actions, self._leaves = [], [], []
        count = max(1, -(-len(moves) // MOVES_PER_MESSAGE),
                    -(-len(actions) // ACTIONS_PER_MESSAGE))
        batches = [contract.encode(contract.Inputs(
            self._instance_id, moves[i * MOVES_PER_MESSAGE:(i + 1) * MOVES_PER_MESSAGE],
            actions[i * ACTIONS_PER_MESSAGE:(i + 1) * ACTIONS_PER_MESSAGE],
            leaves if i == 0 else [])) for i in range(count)]
        try:
            await self._bus.publish_many(subjects.zone_input(self.zone_id), batches)
        except BusUnavailable as exc:
            # Moves are stale by the time NATS is back; a leave must still arrive.
            log.warning("zone %s: inputs not sent: %s", self.zone_id, exc)
            self._leaves = leaves + self._leaves
            return False
        return True

    async def _watch(self) -> None:
        """Notice a silent zone, tell its members, and re-join them until it answers."""
        while True:
            await trio.sleep(REJOIN_EVERY_S / 4)
            silent = trio.current_time() - self._last_snapshot > DOWN_AFTER_S
            if silent and self._members.keys() - self._lost:
                log.warning("zone %s stopped answering; %d players wait for it", self.zone_id,
                            len(self._members))
                for character_id, member in self._members.items():
                    if character_id not in self._lost:
                        self._lost.add(character_id)
                        member.zone_lost()
                self._last_rejoin = trio.current_time()
            if self._lost and trio.current_time() - self._last_rejoin >= REJOIN_EVERY_S:
                self._last_rejoin = trio.current_time()
                for character_id in list(self._lost):
                    waiting = self._members.get(character_id)
                    if waiting is not None:
                        waiting.rejoin()
