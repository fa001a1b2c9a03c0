"""Running a server process: the backing actors, the HTTP edge, and ordered shutdown.

Shutdown order (hypercorn's own, in miniature): SIGINT/SIGTERM stops accepting
and lets in-flight requests finish under a deadline; then the actors close
(outbox relay, NATS drain, Redis, the Postgres pool), each under its own shield.
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

from server.api import create_app
from server.config import Settings
from server.services import Services, start_services

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RunningApi:
    url: str  # e.g. http://127.0.0.1:8000
    services: Services


async def run_api(
    settings: Settings, *, shutdown: trio.Event,
    task_status: trio.TaskStatus[RunningApi] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP API until `shutdown` is set; report where it listens when ready."""
    async with trio_asyncio.open_loop(), trio.open_nursery() as backends:
        services = await start_services(backends, settings, name="outpost-api")
        config = Config()
        config.bind = [f"{settings.http_host}:{settings.http_port}"]
        config.graceful_timeout = GRACEFUL_TIMEOUT_S
        config.accesslog = None  # tokens may travel in query strings; never log them
        config.errorlog = logging.getLogger("hypercorn.error")  # through our handlers only
        app = create_app(services)
        async with trio.open_nursery() as edge:
            binds = await edge.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
            task_status.started(RunningApi(binds[0], services))
        # serve() has returned: no request is in flight, so the actors can go.
        backends.cancel_scope.cancel()


async def until_signalled(shutdown: trio.Event) -> None:
    """Set `shutdown` on the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s; shutting down", signal.Signals(signum).name)
            shutdown.set()
            return
