"""The fault suite's hostile row (issue 19; docs/protocol.md, "Outpost, messages" and
"Outpost, caps"): while 200 players play, hostile sockets all at once send what once
ended or froze the api process (messages nested hundreds deep, a flood of empty
continuation frames), and what the protocol refuses (malformed JSON, a frame too large,
a message inside an unfinished one, pings at loopback speed, random bytes), and open
more sockets than one account or one address may. Each hostile socket must get its
documented answer; the players must not notice (every frame of theirs decoded, the
tick rate, input latency); the process must stay up.

Rules: the play scenarios' world (tests/faults/play.py): an `outpost api` and an
`outpost zone z1` process, the swarm in its own process. Hostile connections from one
address come from 127.0.0.9 (loopback takes any 127/8 source), so that the cap on
connections per address meets them and not the players on 127.0.0.1.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import trio

from bench import v2
from bench.rawws import client_frame, frame_at
from server.config import Settings
from server.ws import codec
from server.ws.edge import REFUSALS_LINGERING
from tests.faults.ledger import Figures, record
from tests.faults.play import PLAYERS, ZONE, assert_undisturbed, swarm, world
from tests.helpers import metric
from tests.processes import started
from tests.world import leftover, new_player, raw_upgrade

ADDRESS_CAP = 256  # the default of MAX_CONNECTIONS_PER_ADDRESS
FROM_ONE_ADDRESS = 300
SOCKETS_PER_USER = 10  # the default of WORLD_MAX_SOCKETS_PER_USER
RANDOM_SOCKETS = 10
ANSWER_S = 15.0  # a busy process of 200 players answers within this


async def _answer(stream: trio.SocketStream, buffered: bytes) -> str:
    """What the server said: `close <code> <reason>` or `error <code>` (socket open)."""
    data = bytearray(buffered)
    with trio.fail_after(ANSWER_S):
        while True:
            offset = 0
            while (frame := frame_at(data, offset)) is not None:
                opcode, start, end = frame
                payload = bytes(data[start:end])
                if opcode == codec.CLOSE:
                    return f"close {int.from_bytes(payload[:2], 'big')} {payload[2:].decode()}"
                if b"error" in payload:
                    code = (v2.decode(payload) if opcode == codec.BINARY
                            else httpx.Response(200, content=payload).json())["code"]
                    return f"error {code}"
                offset = end
            del data[:offset]
            chunk = await stream.receive_some(65536)
            if not chunk:
                return "closed without a close frame"
            data += chunk


Attack = Callable[[str, dict[str, Any]], Awaitable[str]]


def _sending(frames: bytes, wire: str = "v1") -> Attack:
    """An attack that upgrades, sends `frames` (for up to a few seconds: the server may stop
    reading once it has closed) and reports the answer."""
    async def attack(url: str, user: dict[str, Any]) -> str:
        stream, head = await raw_upgrade(url, user["token"],
                                         protocol=v2.SUBPROTOCOL if wire == "v2" else None)
        async with stream:
            assert head.startswith(b"HTTP/1.1 101"), head
            with trio.move_on_after(5):
                await stream.send_all(frames)
            return await _answer(stream, leftover(head))

    return attack


def _random_traffic(seed: int) -> bytes:
    """16 KiB of random bytes (even seeds), or 50 well-made frames of random payloads."""
    rng = random.Random(seed)
    if seed % 2 == 0:
        return rng.randbytes(16_384)
    return b"".join(client_frame(rng.randbytes(rng.randrange(300)),
                                 rng.choice([codec.TEXT, codec.BINARY])) for _ in range(50))


ATTACKS: dict[str, tuple[Attack, set[str]]] = {  # each with the answers docs/protocol.md allows
    "v1 ping nested 300 deep": (_sending(client_frame(
        b'{"type":"ping","t":' + b"[" * 300 + b"]" * 300 + b"}")), {"error validation_failed"}),
    "v2 message nested 1,500 deep": (_sending(client_frame(
        b"\x82\xa4type\xa4ping\xa1t" + b"\x91" * 1500 + b"\x90", codec.BINARY), "v2"),
        {"error validation_failed"}),
    "malformed JSON": (_sending(client_frame(b'{"type":')), {"error bad_json"}),
    "100,000 empty continuations": (_sending(
        client_frame(b'{"type":', fin=False)
        + client_frame(b"", codec.CONTINUATION, fin=False) * 100_000),
        {"close 4008 too many fragments"}),
    "pings at loopback speed": (_sending(client_frame(b"hi", codec.PING) * 20_000),
                                {"close 4008 too many frames"}),
    "a 2 MiB frame": (_sending(client_frame(b"x" * (2 << 20))), {"close 4008 frame too large"}),
    "a message inside an unfinished one": (_sending(
        client_frame(b'{"type":', fin=False) + client_frame(b'{"type":"ping"}')),
        {"close 1002 a new message inside a fragmented one"}),
    **{f"random traffic #{seed}": (_sending(_random_traffic(seed)), {
        "close 1002 reserved bits set", "close 1002 unknown opcode",
        "close 1002 client frames must be masked", "close 1002 bad control frame",
        "close 4008 frame too large", "close 1007 text must be UTF-8",
        "close 1002 continuation without a start", "error bad_json",
        "error validation_failed"})
       for seed in range(RANDOM_SOCKETS)},
}


async def _one_account(url: str, user: dict[str, Any]) -> str:
    """One account opens a socket more than it may: the last upgrade's answer."""
    async with AsyncExitStack() as held:
        for _ in range(SOCKETS_PER_USER):
            stream, head = await raw_upgrade(url, user["token"])
            await held.enter_async_context(stream)
            assert head.startswith(b"HTTP/1.1 101"), head
        stream, head = await raw_upgrade(url, user["token"])
        async with stream:
            return head.split(b"\r\n")[0].decode()


async def _one_address(url: str) -> int:
    """Connections from one address beyond its cap, opened at once and silent: how many
    were answered 429. A held one gets nothing, and its end once it has said nothing for
    WORLD_HANDSHAKE_TIMEOUT (5 s); a refused one its 429 while few refusals wait for their
    clients, else its end at once (server/ws/edge.py, REFUSALS_LINGERING)."""
    host, port = url.removeprefix("http://").split(":")
    refused = 0

    async def answered(stream: trio.SocketStream) -> None:
        nonlocal refused
        with trio.fail_after(ANSWER_S):
            answer = await stream.receive_some(65536)  # then count: `+= await` would race
        refused += answer.startswith(b"HTTP/1.1 429")

    async with AsyncExitStack() as stack:
        streams = []
        for _ in range(FROM_ONE_ADDRESS):
            sock = trio.socket.socket()
            await sock.bind(("127.0.0.9", 0))
            await sock.connect((host, int(port)))
            streams.append(await stack.enter_async_context(trio.SocketStream(sock)))
        async with trio.open_nursery() as reading:
            for stream in streams:
                reading.start_soon(answered, stream)
    return refused


async def test_hostile_traffic_among_200(
    settings: Settings, nursery: trio.Nursery, tmp_path: Path
) -> None:
    answers: dict[str, str] = {}
    async with world(settings, nursery, tmp_path,
                     MAX_CONNECTIONS_PER_ADDRESS=str(ADDRESS_CAP)) as (_, api, env), \
            started(tmp_path, "zone", ZONE, env=env), \
            swarm(tmp_path, api.url, PLAYERS) as players, \
            httpx.AsyncClient(base_url=api.url) as http:
        attackers = [await new_player(http, f"Hostile{i}") for i in range(len(ATTACKS) + 1)]
        await players.ready(ZONE)

        async def run(name: str, attack: Attack, user: dict[str, Any]) -> None:
            answers[name] = await attack(api.url, user)

        async def address() -> None:
            answered_429 = await _one_address(api.url)
            answers[f"{FROM_ONE_ADDRESS} connections from one address"] = \
                f"{FROM_ONE_ADDRESS - ADDRESS_CAP} refused, {answered_429} of them answered 429"

        async def account() -> None:
            answers[f"{SOCKETS_PER_USER + 1} sockets of one account"] = await _one_account(
                api.url, attackers[-1])

        async with trio.open_nursery() as attacking:  # all at once, as attackers would
            for (name, (attack, _)), user in zip(ATTACKS.items(), attackers, strict=False):
                attacking.start_soon(run, name, attack, user)
            attacking.start_soon(address)
            attacking.start_soon(account)
        refused_caps = {cap: await metric(f"{api.url}/metrics",
                                          "outpost_connections_refused_total", cap=cap)
                        for cap in ("connections_per_address", "sockets_per_user")}
        await trio.sleep(1)  # the players, after: measured by the swarm to its end
        ledger = await players.finished()
        report = players.report
        alive = api.process.returncode is None
    wrong = {name: answers[name] for name, (_, allowed) in ATTACKS.items()
             if answers[name] not in allowed}
    rates, p99 = report["snapshots_per_s_per_client"], report["input_latency"]["p99_ms"]
    lost = sum(p.close is not None for p in ledger.values()) + report["frames_failed"]["count"]
    record(Figures("hostile traffic", f"{PLAYERS} players moving at 5 Hz",
                   f"{len(ATTACKS)} hostile sockets at once (nested, malformed, fragmented, "
                   "oversized, random), one account and one address past their caps",
                   None, lost, None,
                   "; ".join(f"{name}: {answer}" for name, answer in answers.items())
                   + f"; players: snapshots/s min {rates['min']}, latency p99 {p99} ms, "
                   f"{report['frames_checked']} frames decoded, "
                   f"{report['frames_failed']['count']} failed"))
    assert alive, "the api process ended"
    assert wrong == {}, wrong
    assert answers[f"{SOCKETS_PER_USER + 1} sockets of one account"].startswith(
        "HTTP/1.1 429"), answers
    # Exactly the connections past the cap were refused, as the server counted them; those
    # it answered, at least as many as may wait for their clients at once.
    assert refused_caps == {"connections_per_address": FROM_ONE_ADDRESS - ADDRESS_CAP,
                            "sockets_per_user": 1}, refused_caps
    answered_429 = int(answers[f"{FROM_ONE_ADDRESS} connections from one address"].split()[2])
    assert REFUSALS_LINGERING <= answered_429 <= FROM_ONE_ADDRESS - ADDRESS_CAP, answers
    assert_undisturbed(report, ledger)
    assert lost == 0
