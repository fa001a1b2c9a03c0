"""A test host of its own for the fault suite: a Linux network namespace joined to this
machine by a veth pair, and relays that let its processes reach the suite's services.

The services listen on loopback only, which a process in another namespace cannot
reach, so each is offered on this side's veth address by a relay (a TCP proxy in the
test's own process) that also delays what it carries, as a network between two
machines would. Taking this side's veth down is a partition: packets vanish without a
reset, both ends see silence, and their connections carry on once it is up again.

This machine's kernel has no `netem` queueing discipline (`tc qdisc add ... netem`
says the kind is unknown), so the delay is the relays' and there is no packet loss to
add: TCP would hide it from the processes anyway, as longer delays.

Needs root and iproute2 (`make test` installs iproute2 when it is missing).
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

RELAY_DELAY_S = 0.010  # each way: 20 ms between the hosts, there and back
CHUNK = 65536


async def _ip(*args: str, check: bool = True) -> None:
    await trio.run_process(["ip", *args], capture_stdout=True, capture_stderr=True,
                           check=check)


@dataclass(frozen=True)
class NetHost:
    name: str  # of the namespace
    link: str  # this side of the veth pair
    address: str  # this side's address, where the relays listen
    peer: str  # the test host's address

    @property
    def run(self) -> tuple[str, ...]:
        """The prefix that runs a command on the test host."""
        return ("ip", "netns", "exec", self.name)

    async def cut(self) -> None:
        await _ip("link", "set", self.link, "down")

    async def heal(self) -> None:
        await _ip("link", "set", self.link, "up")


@asynccontextmanager
async def net_host() -> AsyncIterator[NetHost]:
    """A namespace with a veth pair to this one, link-local addresses on a /30 of its
    own; deleted (with its veth pair) when the block ends."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network namespace needs root and iproute2 (`make test` installs it)")
    tag = uuid.uuid4().hex[:6]
    subnet = random.randrange(1, 254)
    host = NetHost(f"outpost-{tag}", f"oph{tag}", f"169.254.{subnet}.1",
                    f"169.254.{subnet}.2")
    peer = f"opn{tag}"
    await _ip("netns", "add", host.name)
    try:
        await _ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
        await _ip("link", "set", peer, "netns", host.name)
        await _ip("addr", "add", f"{host.address}/30", "dev", host.link)
        await _ip("link", "set", host.link, "up")
        for args in (("addr", "add", f"{host.peer}/30", "dev", peer),
                     ("link", "set", peer, "up"), ("link", "set", "lo", "up")):
            await _ip("netns", "exec", host.name, "ip", *args)
        yield host
    finally:
        with trio.CancelScope(shield=True):  # its veth pair goes with it
            await _ip("netns", "del", host.name, check=False)


async def _read(source: trio.SocketStream, to: trio.MemorySendChannel[tuple[float, bytes]],
                connection: trio.CancelScope) -> None:
    """Take one direction's chunks, each due RELAY_DELAY_S after it arrived."""
    async with to:
        try:
            while data := await source.receive_some(CHUNK):
                await to.send((trio.current_time() + RELAY_DELAY_S, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            connection.cancel()


async def _write(sink: trio.SocketStream, chunks: trio.MemoryReceiveChannel[tuple[float, bytes]],
                 connection: trio.CancelScope) -> None:
    try:
        async for due, data in chunks:
            await trio.sleep_until(due)
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        connection.cancel()


async def _relay(listeners: list[trio.SocketListener], target_port: int) -> None:
    async def serve(client: trio.SocketStream) -> None:
        async with client:
            try:
                server = await trio.open_tcp_stream("127.0.0.1", target_port)
            except OSError:
                return  # the service is down: so is the relayed connection
            async with server, trio.open_nursery() as nursery:
                for source, sink in ((client, server), (server, client)):
                    send, receive = trio.open_memory_channel[tuple[float, bytes]](1024)
                    nursery.start_soon(_read, source, send, nursery.cancel_scope)
                    nursery.start_soon(_write, sink, receive, nursery.cancel_scope)

    await trio.serve_listeners(serve, listeners)


async def relayed(url: str, host: NetHost, nursery: trio.Nursery) -> str:
    """`url` (a service on loopback) as the test host reaches it: through a relay on
    this side's veth address, which runs in `nursery`."""
    parts = urlsplit(url)
    assert parts.port is not None, url
    listeners = await trio.open_tcp_listeners(0, host=host.address)
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(_relay, listeners, parts.port)
    netloc = parts.netloc.rsplit("@", 1)
    where = f"{host.address}:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{where}" if len(netloc) == 2
                                     else where))
