"""Running a server process: the backing actors, the HTTP edge, and ordered shutdown.

Shutdown order (hypercorn's own, in miniature): SIGINT/SIGTERM stops accepting
and lets in-flight requests finish under a deadline; then the workers stop (the
provisioning consumers settle what they hold); then the actors close (outbox
relay, NATS drain, Redis, the Postgres pool), each under its own shield.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from functools import partial

import trio
import trio_asyncio
from hypercorn.config import Config
from hypercorn.trio import serve

from bus.provisioning import Provisioner
from server.api import create_app
from server.config import Settings
from server.services import Services, start_services

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Roles:
    """What one process does: `outpost dev` is all of them, the others one each."""

    http: bool = True
    provisioner: bool = False

    @property
    def name(self) -> str:
        parts = [r for r, on in (("api", self.http), ("provisioner", self.provisioner)) if on]
        return "outpost-" + "+".join(parts)


@dataclass(frozen=True)
class Running:
    url: str | None  # e.g. http://127.0.0.1:8000; None without the http role
    services: Services


async def run_process(
    settings: Settings, *, roles: Roles, shutdown: trio.Event,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `roles` until `shutdown` is set; report when ready (and where HTTP listens)."""
    async with trio_asyncio.open_loop(), trio.open_nursery() as backends:
        services = await start_services(backends, settings, name=roles.name)
        async with trio.open_nursery() as workers:
            if roles.provisioner:
                await workers.start(Provisioner(
                    services.pg, services.cache, services.bus, zone_id=settings.world_zone_id,
                    on_committed=services.relay.wake).run)
            async with trio.open_nursery() as edge:
                url = None
                if roles.http:
                    binds = await edge.start(partial(serve, create_app(services),
                                                     _hypercorn_config(settings),
                                                     shutdown_trigger=shutdown.wait))
                    url = binds[0]
                task_status.started(Running(url, services))
                await shutdown.wait()
            # serve() has returned: no request is in flight. Workers finish what they
            # hold (a consumer settles its batch), then the actors go.
            workers.cancel_scope.cancel()
        backends.cancel_scope.cancel()


def _hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.accesslog = None  # tokens may travel in query strings; never log them
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handlers only
    return config


async def until_signalled(shutdown: trio.Event) -> None:
    """Set `shutdown` on the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            shutdown.set()
            return
