"""Hosting a zone for the whole world: the lease, and the zone's NATS side.

A ZoneHost claims its zone in the directory and, while it holds the lease, runs
the zone actor and serves it to every process: joins (request/reply), inputs,
one snapshot per tick. Without the lease it stands by and claims again every
third of the lease, so it takes over within a lease of the holder's death. A
holder that fails to renew stops its zone (saving every position) and goes
back to standing by; a graceful stop releases the lease at once.

Members in other processes are represented here by RemoteMembers. Their
processes send inputs at least every second; a process silent for
`SILENT_AFTER_S` is gone, and its members leave (their positions saved). The
zone's feed goes out once a tick while any are here: what changed in the zone,
and all of it every `COMPLETE_EVERY_S`, when an api process joins its first
member, and after a tick that could not be sent (zones/interest.py, `feed`).
Messages are the typed values of zones/contract.py: one that does not decode is
refused and counted (a join that cannot be read is answered `validation_failed`).
"""

from __future__ import annotations

import logging
from collections import deque

import trio

from bus import subjects
from bus.connection import Bus, BusUnavailable, Message
from persistence.errors import DomainError
from rules.api import LONGEST_TEXT, Input, Profile, checked
from zones import contract
from zones.actor import Entrant, ZoneActor
from zones.context import ZONE
from zones.contract import Value
from zones.interest import Interest, View
from zones.world import World

log = logging.getLogger(__name__)

SILENT_AFTER_S = 5.0
REAP_EVERY_S = 1.0  # how often members of silent processes are looked for
COMPLETE_EVERY_S = 1.0
# A holder that has not renewed for this part of a lease stops its zone: the key may
# expire a lease after the last renewal was asked for, and a standby take over, so the
# zone must have stopped ticking by then (never two owners), with time to spare.
FENCE_AT = 0.75


class RemoteMember:
    """A member whose session lives in another process."""

    def __init__(self, host: ZoneHost, api: str, session: str, character_id: str) -> None:
        self._host = host
        self.api = api
        self.session = session
        self.character_id = character_id

    def snapshot(self, view: View) -> None:
        pass  # the host publishes the zone's feed once a tick, for all remote members

    def replaced(self) -> None:
        self._host.replaced(self.api, self.session)

    def refused(self, code: str, message: str, seq: int) -> None:
        self._host.refused(self, code, message, seq)


class ZoneHost:
    def __init__(self, zone_id: str, world: World, bus: Bus) -> None:
        self.zone_id = zone_id
        self._world = world
        self._bus = bus
        self._directory = world.directory
        self.active = False
        self.held_by: str | None = None  # while standing by: who holds the zone (_holder)
        self._members: dict[str, RemoteMember] = {}  # character id -> remote member
        self._heard: dict[str, float] = {}  # api instance -> when it last sent inputs
        self._feed_out, self._feed_in = trio.open_memory_channel[bytes](1)
        self._complete_at = 0.0  # when the next complete feed is due
        # What to tell each api process: its sessions replaced, and inputs refused.
        self._news: dict[str, contract.News] = {}
        self._news_ready = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[ZoneHost] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Reports ready once it runs the zone or knows it must stand by."""
        ZONE.set(self.zone_id)
        await self._bus.connected_once.wait()
        while True:
            try:
                await self._directory.open()  # the lease is the directory's
                break
            except BusUnavailable as exc:
                log.info("zone %s: directory unreachable: %s", self.zone_id, exc)
                await trio.sleep(self._directory.lease_s / 3)
        lease = self._directory.lease_s
        told: str | None = None  # the holder the last "standing by" named
        while True:
            asked_at = trio.current_time()
            revision = await self._claim()
            if revision is None:
                # Said once, and again only when the holder changes (not every claim).
                self.held_by = await self._holder()
                if self.held_by != told:
                    log.info("zone %s: standing by (held by %s)", self.zone_id, self.held_by)
                    told = self.held_by
                task_status.started(self)
                task_status = trio.TASK_STATUS_IGNORED
                await trio.sleep(lease / 3)
                continue
            told = self.held_by = None
            log.info("zone %s: running it", self.zone_id)
            try:
                await self._host(revision, asked_at, task_status)
            except BusUnavailable as exc:  # NATS went away before the zone was served
                log.warning("zone %s: stopped hosting: %s", self.zone_id, exc)
                await trio.sleep(lease / 3)
            task_status = trio.TASK_STATUS_IGNORED

    async def _claim(self) -> int | None:
        try:
            return await self._directory.claim(self.zone_id, contract.encode(contract.Held(
                self._world.instance_id, 0, 0, self._world.tick_rate_hz,
                contract.TickTimes(None, None, None))))
        except BusUnavailable as exc:
            log.info("zone %s: directory unreachable: %s", self.zone_id, exc)
            return None

    async def _holder(self) -> str:
        """Who holds the zone, for the log: `process <instance id>` (the owner that
        GET /v1/world/zones shows), or why that is not known."""
        try:
            value = await self._directory.holder(self.zone_id)
        except BusUnavailable:
            return "another process (the directory is unreachable)"
        held = None if value is None else self._world.refusals.decode(
            contract.HELD, value, "directory entry")
        # None: released or expired since the claim; the next claim will likely take it.
        return f"process {held.owner}" if held is not None else "nobody now"

    async def _host(self, revision: int, asked_at: float,
                    task_status: trio.TaskStatus[ZoneHost]) -> None:
        actor = self._world.new_zone(self.zone_id, publish_tick=self._publish_tick)
        held = [revision]
        try:
            async with trio.open_nursery() as hosting:
                actor.lease_ends_at = asked_at + self._directory.lease_s
                await hosting.start(actor.run)
                self._world.hosting(actor)
                self.active = True
                hosting.start_soon(self._renew, actor, held, asked_at, hosting.cancel_scope)
                hosting.start_soon(self._serve_joins, actor)
                hosting.start_soon(self._serve_inputs, actor)
                hosting.start_soon(self._serve_roster, actor)
                hosting.start_soon(self._send_feed)
                hosting.start_soon(self._send_news)
                hosting.start_soon(self._reap_silent, actor)
                task_status.started(self)
        finally:
            self.active = False
            self._world.stopped_hosting(self.zone_id)
            self._members.clear()
            with trio.move_on_after(2) as scope:
                scope.shield = True
                if held[0]:
                    await self._directory.release(self.zone_id, held[0])

    async def _renew(self, actor: ZoneActor, held: list[int], renewed_at: float,
                     hosting: trio.CancelScope) -> None:
        """Renew the lease with the zone's stats (`renewed_at`: when the last renewal
        that succeeded was asked for); stop hosting if it is lost, or if it could not be
        renewed for FENCE_AT of a lease (NATS unreachable: cut off, or overloaded)."""
        lease = self._directory.lease_s
        while True:
            with trio.move_on_at(renewed_at + FENCE_AT * lease):
                await trio.sleep(lease / 3)
                asked_at = trio.current_time()
                try:
                    renewed = await self._directory.renew(self.zone_id, self._held(actor),
                                                          held[0])
                except BusUnavailable as exc:
                    log.warning("zone %s: lease not renewed (%s)", self.zone_id, exc)
                    continue  # the lease may still hold: try again while it surely does
                if renewed is None:
                    log.error("zone %s: lease lost to another process; stopping",
                              self.zone_id)
                    self._world.zone_stops[self.zone_id, "lease_lost"] += 1
                    held[0] = 0
                    hosting.cancel()
                    return
                held[0], renewed_at = renewed, asked_at
                actor.lease_ends_at = asked_at + lease
                continue
            log.error("zone %s: lease not renewed for %.1f s; stopping before it can run "
                      "out", self.zone_id, trio.current_time() - renewed_at)
            self._world.zone_stops[self.zone_id, "not_renewed"] += 1
            hosting.cancel()
            return

    def _held(self, actor: ZoneActor) -> bytes:
        """The zone's key in the directory: this process holds it, and its figures."""
        p50, p99, most = actor.counts.ticks.percentiles_ms(0.5, 0.99, 1.0)
        return contract.encode(contract.Held(
            self._world.instance_id, actor.player_count, actor.tick, actor.tick_rate_hz,
            contract.TickTimes(p50, p99, most)))

    async def _serve_joins(self, actor: ZoneActor) -> None:
        async with self._bus.subscription(subjects.zone_join(self.zone_id)) as joins:
            async for message in joins:
                answer = await self._join(actor, message)
                if not message.reply:
                    continue  # a join published, not requested: nobody waits for an answer
                try:
                    await self._bus.publish_many(message.reply, [contract.encode(answer)])
                except BusUnavailable:
                    log.warning("zone %s: a join answer was lost", self.zone_id)

    async def _join(self, actor: ZoneActor, message: Message) -> contract.JoinReply:
        body = self._world.refusals.decode(contract.JOIN_REQUESTS, message.data, "join")
        if body is None:
            return contract.JoinRefused("validation_failed", "a join this zone cannot read")
        entrant = Entrant(body.character_id, body.user_id, body.name, body.x, body.y,
                          body.placed, Profile(body.character_class, body.level,
                                               tuple(body.weapons)))
        # A session joining its own character again (a client's second join, or a rejoin
        # sent again while the first was answered) is that member still, not a takeover.
        known = self._members.get(entrant.character_id)
        member = known if known is not None and \
            (known.api, known.session) == (body.api, body.session) \
            else RemoteMember(self, body.api, body.session, entrant.character_id)
        try:
            admission = await actor.join(entrant, member)
        except DomainError as exc:
            return contract.JoinRefused(exc.code, exc.message)
        if all(m.api != member.api for m in self._members.values()):
            self._complete_at = 0.0  # its mirror needs everything first
        self._members[entrant.character_id] = member
        self._heard[member.api] = trio.current_time()
        return contract.Admitted(admission.tick, admission.tick_rate_hz, admission.x,
                                 admission.y, admission.eid)

    async def _serve_roster(self, actor: ZoneActor) -> None:
        """Who plays here, for the operator console of any api process."""
        async with self._bus.subscription(subjects.zone_roster(self.zone_id)) as asks:
            async for message in asks:
                asked = self._world.refusals.decode(contract.ROSTER_ASKED, message.data,
                                                    "roster request")
                if asked is None or not message.reply:
                    continue
                try:
                    await self._bus.publish_many(message.reply, [contract.roster_reply(
                        actor.player_count, actor.roster(contract.ROSTER_MOST))])
                except BusUnavailable:
                    log.warning("zone %s: a roster answer was lost", self.zone_id)

    async def _serve_inputs(self, actor: ZoneActor) -> None:
        subject = subjects.zone_input(self.zone_id)
        async with self._bus.subscription(subject, buffer=10_000) as inputs:
            async for message in inputs:
                body = self._world.refusals.decode(contract.INPUTS, message.data, "inputs")
                if body is None:
                    continue
                self._heard[body.api] = trio.current_time()
                if not body.actions:  # moves alone: the common drain
                    for character_id, dx, dy, seq in body.moves:
                        actor.move(character_id, dx, dy, seq)
                else:
                    for is_move, i in in_order(body):
                        if is_move:
                            character_id, dx, dy, seq = body.moves[i]
                            actor.move(character_id, dx, dy, seq)
                        else:
                            self._act(actor, *body.actions[i])
                for character_id, session in body.leaves:
                    self._leave(actor, character_id, session)

    def _act(self, actor: ZoneActor, character_id: str, kind: str, seq: int,
             values: list[Value]) -> None:
        """A game input relayed by an api process, checked again as the edge checks it
        (the rules see nothing unchecked, whoever sent it)."""
        spec = self._world.inputs.get(kind)
        checked_values = None if spec is None or len(values) != len(spec.fields) \
            else checked(spec, dict(zip((name for name, _ in spec.fields), values,
                                        strict=True)))
        if not isinstance(checked_values, tuple):
            self._world.refusals.refuse("inputs", "invalid", f"an input {kind!r} the game "
                                        f"would not take: {checked_values}", 0)
            return
        actor.act(character_id, Input(kind, seq, checked_values))

    def _leave(self, actor: ZoneActor, character_id: str, session: str) -> None:
        member = self._members.get(character_id)
        if member is not None and member.session == session:
            del self._members[character_id]
            actor.leave(character_id, member)

    async def _reap_silent(self, actor: ZoneActor) -> None:
        """Members of a process that stopped talking leave (its sessions are gone)."""
        while True:
            await trio.sleep(REAP_EVERY_S)
            now = trio.current_time()
            for character_id, member in list(self._members.items()):
                if now - self._heard.get(member.api, now) > SILENT_AFTER_S:
                    log.info("zone %s: %s silent, %s leaves", self.zone_id, member.api,
                             character_id)
                    self._leave(actor, character_id, member.session)

    def _publish_tick(self, interest: Interest) -> None:
        if not self._members:
            return
        now = trio.current_time()
        complete = now >= self._complete_at
        try:
            self._feed_out.send_nowait(interest.feed(complete=complete))
        except trio.WouldBlock:
            # The last tick is still going out: mirrors will miss this one, and need
            # everything next time.
            self._complete_at = 0.0
            return
        if complete:
            self._complete_at = now + COMPLETE_EVERY_S

    async def _send_feed(self) -> None:
        subject = subjects.zone_snapshot(self.zone_id)
        async for payload in self._feed_in:
            try:
                await self._bus.publish_many(subject, [payload])
            except BusUnavailable:  # remote members notice the silence
                self._complete_at = 0.0

    def replaced(self, api: str, session: str) -> None:
        """Tell `api` (soon, from a task) that its `session` was taken over."""
        for character_id, member in list(self._members.items()):
            if member.session == session:
                del self._members[character_id]
                self._news_for(api).replaced.append((self.zone_id, character_id, session))
        self._news_ready.set()

    def refused(self, member: RemoteMember, code: str, message: str, seq: int) -> None:
        """Tell `member`'s api process (soon) that the game refused an input of its."""
        # Cut to what the news carries (a longer text would make the api process refuse
        # the whole message, the sessions it tells of replaced with it).
        self._news_for(member.api).refused.append(
            (self.zone_id, member.character_id, member.session, code[:LONGEST_TEXT],
             message[:LONGEST_TEXT], seq))
        self._news_ready.set()

    def _news_for(self, api: str) -> contract.News:
        news = self._news.get(api)
        if news is None:
            news = self._news[api] = contract.News([], [])
        return news

    async def _send_news(self) -> None:
        while True:
            await self._news_ready.wait()
            self._news_ready = trio.Event()
            news, self._news = self._news, {}
            for api, told in news.items():
                try:
                    await self._bus.publish_many(subjects.api_events(api),
                                                 [contract.encode(told)])
                except BusUnavailable:
                    log.warning("zone %s: could not tell %s what became of its sessions",
                                self.zone_id, api)


def in_order(body: contract.Inputs) -> list[tuple[bool, int]]:
    """The inputs of a drain with moves and actions, as (is a move, its index), each
    character's in the order its client sent them (by seq: a session takes only
    increasing ones): a shot before a move is judged from where the shooter stood, as
    in the zone's own process. Characters keep the order of their moves."""
    waiting: dict[str, deque[int]] = {}
    for i, (character_id, _, _, _) in enumerate(body.actions):
        waiting.setdefault(character_id, deque()).append(i)
    order: list[tuple[bool, int]] = []
    for i, (character_id, _, _, seq) in enumerate(body.moves):
        before = waiting.get(character_id)
        while before and body.actions[before[0]][2] < seq:
            order.append((False, before.popleft()))
        order.append((True, i))
    order += sorted((False, i) for queue in waiting.values() for i in queue)
    return order
