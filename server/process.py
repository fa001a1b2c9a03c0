"""Running a server process: the backing actors, the HTTP edge, and ordered shutdown.

Shutdown order (hypercorn's own, in miniature): SIGINT/SIGTERM stops accepting,
closes world sessions with 1001 and lets in-flight requests finish under a
deadline (a request that comes after the signal, on a connection open before it, is
answered 503); then the workers stop (zones save every position, the provisioning
consumers settle what they hold); then the actors close (outbox relay, NATS,
Redis, the Postgres pool), each under its own shield.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
import trio_asyncio
from hypercorn.config import Config

from bus.combat import KillConsumers
from bus.provisioning import Provisioner
from server.config import Settings
from server.http.app import create_app
from server.listening import listen
from server.metrics import Metrics, serve_metrics
from server.services import Services, start_services
from server.ws.edge import Edge
from zones.host import ZoneHost

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Roles:
    """What one process does: `outpost dev` is all of them, the others one each."""

    http: bool = True
    provisioner: bool = False
    zones: tuple[str, ...] = ()  # zone actors run in this process

    @property
    def name(self) -> str:
        return "outpost-" + self.role

    @property
    def role(self) -> str:
        """What log lines and metrics call it: api, provisioner, zone-z1, api+provisioner+..."""
        parts = [r for r, on in (("api", self.http), ("provisioner", self.provisioner)) if on]
        return "+".join(parts + [f"zone-{z}" for z in self.zones])


@dataclass(frozen=True)
class Running:
    http_url: str | None  # e.g. http://127.0.0.1:8000; None without the http role
    metrics_url: str  # where /metrics is served: on the HTTP port, or on METRICS_PORT
    services: Services
    metrics: Metrics
    zones: tuple[ZoneHost, ...] = ()  # each running its zone, or standing by, when started

    @property
    def url(self) -> str:
        """Where HTTP listens, for a process with the http role."""
        assert self.http_url is not None, "this process has no HTTP role"
        return self.http_url


def _log_leftover(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio calls unhandled: trio_asyncio would raise it into the process and end
    it. It is what a library left behind, such as the result of a query that a deadline
    cancelled, never read (asyncpg's "unexpected connection_lost()" when many do at
    once): the request that started it was answered already, so log it and go on."""
    log.warning("asyncio: %s", context.get("message", "unhandled error"),
                exc_info=context.get("exception"))


async def run_process(
    settings: Settings, *, roles: Roles, shutdown: trio.Event,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `roles` until `shutdown` is set; report when ready (and where HTTP listens)."""
    # First of all, before services and zones start (and a lease is taken) only to stop.
    # The API serves /metrics on its own port unless METRICS_PORT asks for another one.
    listener = (listen(settings.http_host, settings.http_port, "HTTP_PORT") if roles.http
                else None)
    metrics_listener = (listen(settings.http_host, settings.metrics_port or 0, "METRICS_PORT")
                        if not roles.http or settings.metrics_port is not None else None)
    # (Closed at the end, however the process ends; the servers close them as they stop.)
    with listener or nullcontext(), metrics_listener or nullcontext():
        async with trio_asyncio.open_loop() as loop, trio.open_nursery() as backends:
            loop.set_exception_handler(_log_leftover)
            services = await start_services(backends, settings, name=roles.name)
            metrics = Metrics(role=roles.role, world=services.world, cache=services.cache,
                              relay=services.relay)
            async with trio.open_nursery() as workers:
                # Among the workers, so that at shutdown the leaves of sessions that ended
                # still reach zones in other processes before the bus closes.
                await workers.start(services.world.run)
                hosts = tuple([await workers.start(ZoneHost(zone_id, services.world,
                                                            services.bus).run)
                               for zone_id in roles.zones])
                if roles.provisioner:
                    provisioner = await workers.start(Provisioner(
                        services.pg, services.bus, services.characters).run)
                    kills = await workers.start(KillConsumers(services.pg, services.bus).run)
                    metrics.consumers = [*provisioner.workers, *kills.workers]
                async with trio.open_nursery() as edge:
                    url = None
                    if listener is not None:
                        app = create_app(services, metrics,
                                         serves_metrics=metrics_listener is None)
                        url = await edge.start(partial(
                            Edge(app, _hypercorn_config(settings), settings, services.world,
                                 services.tokens, services.access, metrics.wire).serve,
                            listener, shutdown=shutdown))
                    if metrics_listener is not None:
                        metrics_url = await edge.start(partial(
                            serve_metrics, metrics, metrics_listener, shutdown=shutdown))
                    else:
                        metrics_url = f"{url}/metrics"
                    task_status.started(Running(url, metrics_url, services, metrics, hosts))
                    await shutdown.wait()
                # The edge has returned: no request is in flight and every world session has
                # ended (its character left its zone). Workers finish what they hold (a zone
                # saves every position, a consumer settles its batch), then the actors go.
                workers.cancel_scope.cancel()
            backends.cancel_scope.cancel()


def _hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.accesslog = None  # tokens may travel in query strings; never log them
    # A kept-alive connection's next request head must be complete within this of the last
    # answer, however slowly its bytes come (the edge bounds a connection's first head by
    # the same setting); it is also how long such a connection may idle.
    config.keep_alive_timeout = settings.world_handshake_timeout_s
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handlers only
    return config


def steady_gc() -> None:
    """Tune the cyclic garbage collector for a process that is up and serving.

    What exists once a process has started (modules, services, the app) lives as long
    as the process: freeze it, so that no collection scans it again. And collect the
    oldest generation a tenth as often as CPython does by default: with thousands of
    sessions a full collection holds the event loop for ~100 ms (a zone misses two
    ticks), and measured at N=1000 it came every five seconds; younger generations,
    where short-lived cycles die, are collected as before."""
    gc.freeze()
    gc.set_threshold(700, 10, 100)


async def until_signalled(shutdown: trio.Event) -> None:
    """Set `shutdown` on the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            shutdown.set()
            return
