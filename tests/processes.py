"""Outpost as operators run it: real `outpost <command>` subprocesses for tests.

A process's output goes to a log file in the test's folder; `started` waits
(bounded) for its banner line and fails with the log if it never comes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import trio

from server.config import Settings

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
GRACE_S = 10  # for a process still running when its block ends


@dataclass
class Outpost:
    process: trio.Process
    log: Path
    banner: str  # what followed "outpost: " on its first line

    @property
    def url(self) -> str:
        return self.banner.removeprefix("HTTP ").split(";")[0].strip()

    @property
    def metrics_url(self) -> str:
        """Of a process without the API, or with METRICS_PORT: its banner says where."""
        return self.banner.split("metrics ")[1].strip()

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal it and wait (bounded) for it to exit; its exit code."""
        self.process.send_signal(sig)
        with trio.fail_after(STOP_TIMEOUT_S):
            return await self.process.wait()


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a process that uses the test session's services (registration
    limits and the cap on connections per address as the settings have them: out of the
    way, see tests/conftest.py)."""
    return {**os.environ, "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url, "NATS_URL": settings.nats_url,
            "NATS_REPLICAS": str(settings.nats_replicas),
            "ZONE_LEASE": str(settings.zone_lease_s),
            "JWT_KEYS": ",".join(f"{kid}:{secret}" for kid, secret in settings.jwt_keys),
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_KIB": "1024", "HTTP_PORT": "0",
            "REGISTER_RATE_PER_ADDRESS": str(settings.register_rate_per_address),
            "REGISTER_RATE_TOTAL": str(settings.register_rate_total),
            "MAX_CONNECTIONS_PER_ADDRESS": str(settings.max_connections_per_address), **extra}


@asynccontextmanager
async def started(folder: Path, *args: str, env: dict[str, str],
                  prefix: tuple[str, ...] = (),
                  outpost: tuple[str, ...] = (sys.executable, "-m", "server.cli"),
                  ) -> AsyncIterator[Outpost]:
    """`outpost *args` running until the block ends (then stopped with SIGTERM, or killed
    if that does not do it in GRACE_S); `prefix` runs it through another command (for
    example `ip netns exec <host>`: on a test host of its own); `outpost` is how to run
    `outpost` (for example `podman run ... <image>`, whose entrypoint it is)."""
    log = folder / f"outpost-{'-'.join(args)}-{uuid.uuid4().hex[:8]}.log"
    with open(log, "wb") as output:  # noqa: ASYNC230  (opening a local file: instant)
        process = await trio.lowlevel.open_process(
            [*prefix, *outpost, *args], stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        yield Outpost(process, log, await _banner(process, log))
    finally:
        # Stopped as an operator would, so that it gives its zone leases back: a killed
        # zone's lease would make the next test's zone stand by until the lease expires.
        with trio.move_on_after(STOP_TIMEOUT_S) as scope:
            scope.shield = True  # reap it even when the block ends by cancellation
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(GRACE_S):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            await process.wait()


def logged(log: Path, message: str) -> list[datetime]:
    """When a process logged `message` (its JSON log lines in the file `started` gave it)."""
    times = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = orjson.loads(line)
            if message in entry["message"]:
                times.append(datetime.fromisoformat(entry["time"]))
    return times


async def _banner(process: trio.Process, log: Path) -> str:
    with trio.move_on_after(START_TIMEOUT_S):
        while process.returncode is None:
            for line in (await trio.Path(log).read_text()).splitlines():
                if line.startswith("outpost: "):
                    return line.removeprefix("outpost: ")
            await trio.sleep(0.05)
    output = await trio.Path(log).read_text()
    raise AssertionError(f"outpost {process.args!r} did not come up:\n{output}")
