"""What an api process sends a zone in another process (zones/remote.py): however many
moves gathered while its loop was busy, they go as input messages NATS accepts (a
payload over max_payload makes the server close the connection, and then nothing goes).

Rules: the session's real NATS, through an api process's own bus; the zone's side is a
subscription to its input subject.
"""

from __future__ import annotations

import uuid

import trio

from bus import subjects
from rules.api import Input
from server.process import Running
from tests.helpers import use_api_loop
from zones import contract
from zones.grid import Grid
from zones.remote import RemoteZone

MOVES = 50_000  # ~3 MB: three times NATS's default max_payload in one message


async def test_a_backlog_of_moves_goes_in_messages_nats_accepts(api: Running) -> None:
    use_api_loop(api)
    bus = api.services.bus
    with trio.fail_after(10):
        await bus.connected_once.wait()
    zone_id = f"z{uuid.uuid4().hex[:8]}"
    refusals = contract.Refusals()
    remote = RemoteZone(zone_id, bus, "api-under-test", Grid(-1000, -1000, 1000, 1000, 0),
                        (), refusals)
    received: list[tuple[str, float, float, int]] = []
    sizes: list[int] = []
    async with (bus.subscription(subjects.zone_input(zone_id), buffer=100) as inputs,
                trio.open_nursery() as nursery):
        for seq in range(1, MOVES + 1):  # all before the sender runs once: one backlog
            remote.act(str(uuid.uuid4()), Input("move", seq, (0.5, -0.5)))
        nursery.start_soon(remote.run)
        with trio.fail_after(20):
            async for message in inputs:
                sizes.append(len(message.data))
                received += contract.INPUTS.decode(message.data).moves
                if len(received) >= MOVES:
                    break
        nursery.cancel_scope.cancel()
    assert [move[3] for move in received] == list(range(1, MOVES + 1))  # all, in order
    assert max(sizes) < 1 << 20, max(sizes)
    assert refusals.counts == {}
    assert bus._nc is not None and bus._nc.is_connected
