"""Registration storms for the fault suite's scenarios: an `outpost api` subprocess under
load from the test's process, an in-process observer that audits, and the wait for the
system to settle (the outbox relayed, every user provisioned, the consumers drained)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from bus.subjects import STREAMS
from persistence.outbox import backlog
from server.config import Settings
from server.process import Roles, Running
from tests.faults.ledger import Ledger, Load, parts
from tests.helpers import running_process, use_api_loop, within
from tests.processes import process_env, started
from tests.provisioned import drained

STORM = 500
SETTLE_TRIES = 600  # polls of 0.1 s: a storm of 500 settles in a few seconds


@asynccontextmanager
async def observed(settings: Settings, nursery: trio.Nursery, tmp_path: Path, *,
                   provisioner: bool = True, **api_env: str
                   ) -> AsyncIterator[tuple[Running, Load]]:
    """An `outpost api` subprocess under load from this process, and an in-process
    observer (the audit's connections; the provisioner too, unless the scenario runs
    its own); `api_env` adds to the api's environment."""
    roles = Roles(http=False, provisioner=provisioner)
    async with (running_process(settings, nursery, roles) as observer,
                started(tmp_path, "api", env=process_env(settings, **api_env)) as api):
        use_api_loop(observer)
        await observer.services.bus.ensure_streams(STREAMS)
        load = Load(api.url, concurrency=STORM)
        try:
            yield observer, load
        finally:
            await load.aclose()


async def storm(load: Load, ledger: Ledger, n: int,
                milestones: dict[int, trio.Event]) -> None:
    """`n` registrations at once; `milestones[k]` is set once `k` were answered."""
    answered = 0

    async def one() -> None:
        nonlocal answered
        await ledger.register(load.client())
        answered += 1
        if answered in milestones:
            milestones[answered].set()

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)


async def outbox_empty(running: Running) -> bool:
    pending, _ = await running.services.pg.transact(backlog)
    return pending == 0


async def settled(running: Running, ledger: Ledger) -> str:
    """Wait (bounded) until the outbox is relayed, every user of the ledger provisioned
    and the consumers drained; what never came, if anything (the audit then says what
    was lost)."""
    async def provisioned() -> bool:
        missing, _ = await parts(running, ledger)
        return missing == 0

    for check, what in ((lambda: outbox_empty(running), "the outbox never drained"),
                        (provisioned, "users never provisioned"),
                        (lambda: drained(running), "the consumers never drained")):
        if not await within(check, tries=SETTLE_TRIES):
            return what
    return ""
