"""Fault scenarios on a NATS cluster of three servers (issue 13's table: NATS cluster node
lost), with every stream and the zone directory kept in three replicas (NATS_REPLICAS=3)
and every process given all three servers (NATS_URL).

Covers: a registration storm while the server leading the USERS stream is killed (-9)
halfway: every 201 announced once and provisioned once in all four parts, the outbox
drained, no 5xx; 200 players in play while the server the zone process is connected to is
killed: the zone keeps its one owner, no session is closed or told its zone is
unavailable, every player keeps getting snapshots, and what is saved once they leave
and the zone stops is exactly the positions last shown.

Rules: the fault suite's Postgres and Redis, and a cluster of its own for this module
(tests/faults/cluster.py); a scenario restarts the server it killed and waits for the
cluster to be healthy again before it ends.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from nats.js import JetStreamContext

from server.config import Settings
from server.process import Running
from tests.faults.cluster import NatsCluster, nats_cluster
from tests.faults.ledger import Figures, Ledger, audit, record
from tests.faults.play import (
    PLAYERS,
    ZONE,
    Played,
    listed,
    stored,
    unlike_acked,
    world,
    zone_and_players,
)
from tests.faults.storm import STORM, observed, settled, storm

# A zone's lease on a cluster outlasts the election of a new leader for the zone
# directory (a few seconds), so that its holder can renew through one (README, ZONE_LEASE).
CLUSTER_LEASE_S = 10.0
PLAY_ON_S = 5.0  # after the kill: longer than a zone takes to be declared down (1.5 s)
USERS = "USERS"  # the stream of user.registered
ZONES_STREAM = "KV_ZONES"  # the zone directory's bucket, as JetStream names its stream


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with nats_cluster(tmp_path_factory.mktemp("nats-cluster")) as running:
        yield running


@pytest.fixture
def on_cluster(settings: Settings, cluster: NatsCluster) -> Iterator[Settings]:
    yield dataclasses.replace(settings, nats_url=cluster.url, nats_replicas=3,
                              zone_lease_s=CLUSTER_LEASE_S)
    for node in cluster.nodes.values():  # what a scenario killed, back for the next one
        node.heal()
    cluster.wait_healthy()


async def _stream_leader(js: JetStreamContext, stream: str) -> str:
    info = await js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader, info
    assert len(info.cluster.replicas or []) == 2, f"{stream} is not kept in 3 replicas"
    return info.cluster.leader


async def leader(running: Running, stream: str) -> str:
    """The server that leads `stream` (the one whose loss forces an election)."""
    name: str = await running.services.bus.on_jetstream(_stream_leader, stream)
    return name


async def test_registration_storm_with_a_nats_server_killed(
    cluster: NatsCluster, on_cluster: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    ledger = Ledger()
    async with observed(on_cluster, nursery, tmp_path) as (running, load):
        victim = await leader(running, USERS)
        halfway = trio.Event()
        async with trio.open_nursery() as loading:
            loading.start_soon(storm, load, ledger, STORM, {STORM // 2: halfway})
            await halfway.wait()
            cluster.nodes[victim].kill()
            killed = trio.current_time()
        stuck = await settled(running, ledger)
        recovery = trio.current_time() - killed
        result = await audit(running, ledger)
        new_leader = await leader(running, USERS)
    record(Figures("registration storm, NATS server lost",
                   f"{STORM} concurrent registrations, a 3-server cluster (R3)",
                   f"kill -9 {victim}, the USERS leader, halfway", recovery,
                   result.lost, result.doubled, f"{new_leader} leads USERS after; {result}"))
    assert ledger.statuses == {201: STORM}, ledger.statuses
    assert (result.lost, result.doubled, stuck) == (0, 0, ""), str(result)


def _longest_silence(played: Played, since: float, until: float) -> float:
    """The longest time without an acknowledged move between `since` and `until`."""
    times = [since, *(a[0] for a in played.acked if since < a[0] < until), until]
    return max(b - a for a, b in itertools.pairwise(times))


async def test_play_with_a_nats_server_killed(
    cluster: NatsCluster, on_cluster: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with world(on_cluster, nursery, tmp_path) as (observer, api, env), \
            AsyncExitStack() as stack:
        zone, players = await zone_and_players(stack, tmp_path, api, env)
        owner = (await listed(api.url, ZONE)).get("owner")
        assert owner is not None, "the zone is not up"
        victim = cluster.serving(f"outpost-zone-{ZONE}")  # its feed must find another way
        led = await leader(observer, ZONES_STREAM)
        await trio.sleep(2)
        cluster.nodes[victim].kill()
        killed = time.monotonic()
        await trio.sleep(PLAY_ON_S)
        owner_after = (await listed(api.url, ZONE)).get("owner")
        await players.settled()
        # The players' run ends before the zone's: a zone stopped under them would tell
        # them it is unavailable, which would count against the kill.
        ledger = await players.finished()
        assert await zone.stop(signal.SIGTERM) == 0
        saved = await stored(observer)
    silences = {c: _longest_silence(p, killed, killed + PLAY_ON_S) for c, p in ledger.items()}
    unsaved = unlike_acked(ledger, saved, math.inf)
    told = [c for c, p in ledger.items() if "zone_unavailable" in p.errors]
    closed = [c for c, p in ledger.items() if p.close is not None]
    record(Figures("play, NATS server lost",
                   f"{PLAYERS} players moving at 5 Hz, a 3-server cluster (R3)",
                   f"kill -9 {victim}, the zone process's server"
                   + (" and the zone directory's leader" if victim == led else ""),
                   max(silences.values()),
                   len(unsaved) + len(closed), int(owner_after != owner),
                   f"one owner throughout: {owner_after == owner}; longest silence a "
                   f"player saw {max(silences.values()):.2f} s; {len(told)} told "
                   f"zone_unavailable; after: {PLAYERS - len(unsaved)} saved at the "
                   f"last acked"))
    assert owner_after == owner, "the zone changed hands"
    assert (unsaved, closed, told) == ([], [], [])
    assert max(silences.values()) < 1.5, silences  # less than it takes to call a zone down
