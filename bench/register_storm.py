"""Registration storm: how fast Outpost registers users and provisions them.

Registers N new users with a given concurrency against a live server and, for
each, polls GET /v1/me from its 201 until all four parts (player, progression,
buildings, active character) are there. Reports registrations/s, the register
latency, and the time from 201 to fully provisioned (p50, p95, p99, max); and, on a
connection of its own, the latency of GET /healthz asked every 50 ms during the storm:
hashing runs in worker threads, and must never hold the event loop that serves the rest.

    python bench/register_storm.py --url http://127.0.0.1:8000 -n 1000 -c 32

All from one address: start the server with REGISTER_RATE_PER_ADDRESS and
REGISTER_RATE_TOTAL above N (the defaults allow 5 and 60 a minute).
"""

from __future__ import annotations

import argparse
import time
import uuid

import httpx
import trio

from bench.report import distribution, emit, progress

PROBE_S = 0.05


def fully_provisioned(me: dict[str, object]) -> bool:
    buildings = me.get("buildings")
    return bool(me.get("player") and me.get("progression") and me.get("active_character_id")
                and isinstance(buildings, list) and len(buildings) >= 2)


class Storm:
    def __init__(self, http: httpx.AsyncClient, args: argparse.Namespace) -> None:
        self.http = http
        self.args = args
        self.register_s: list[float] = []
        self.provision_s: list[float] = []
        self.errors: dict[str, int] = {}
        self.unprovisioned = 0
        self.healthz_s: list[float] = []

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def one(self, limit: trio.CapacityLimiter, nursery: trio.Nursery) -> None:
        name = f"storm_{uuid.uuid4().hex[:16]}"
        async with limit:
            started = time.perf_counter()
            try:
                response = await self.http.post("/v1/auth/register", json={
                    "username": name, "email": f"{name}@example.com",
                    "password": "correct horse battery"})
            except httpx.HTTPError as exc:
                self.error(type(exc).__name__)
                return
            registered = time.perf_counter()
        if response.status_code != 201:
            self.error(f"register {response.status_code}")
            return
        self.register_s.append(registered - started)
        nursery.start_soon(self.await_provisioned, response.json()["token"], registered)

    async def await_provisioned(self, token: str, registered: float) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        # Back off from --poll-ms to --max-poll-ms: waiting users must not become the load.
        interval = self.args.poll_ms / 1000
        with trio.move_on_after(self.args.provision_timeout):
            while True:
                try:
                    response = await self.http.get("/v1/me", headers=headers)
                except httpx.HTTPError as exc:
                    self.error(f"me {type(exc).__name__}")
                else:
                    if response.status_code == 200 and fully_provisioned(response.json()):
                        self.provision_s.append(time.perf_counter() - registered)
                        return
                    if response.status_code != 200:
                        self.error(f"me {response.status_code}")
                await trio.sleep(interval)
                interval = min(interval * 1.5, self.args.max_poll_ms / 1000)
        self.unprovisioned += 1

    async def probe(self) -> None:
        """GET /healthz every PROBE_S on a connection of its own, until cancelled."""
        async with httpx.AsyncClient(base_url=self.args.url, timeout=30) as http:
            while True:
                started = time.perf_counter()
                response = await http.get("/healthz")
                if response.status_code == 200:
                    self.healthz_s.append(time.perf_counter() - started)
                else:
                    self.error(f"healthz {response.status_code}")
                await trio.sleep(PROBE_S)

    async def report_progress(self) -> None:
        while True:
            progress(f"registered {len(self.register_s)}/{self.args.n}, "
                     f"provisioned {len(self.provision_s)}, errors {sum(self.errors.values())}")
            await trio.sleep(0.5)


async def run(args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=args.url, timeout=30, limits=limits) as http:
        storm = Storm(http, args)
        limit = trio.CapacityLimiter(args.concurrency)
        async with trio.open_nursery() as outer:
            outer.start_soon(storm.report_progress)
            outer.start_soon(storm.probe)
            started = time.perf_counter()
            async with trio.open_nursery() as pollers:
                async with trio.open_nursery() as registrations:
                    for _ in range(args.n):
                        registrations.start_soon(storm.one, limit, pollers)
                storm_s = time.perf_counter() - started
            outer.cancel_scope.cancel()
    emit(f"register_storm: {args.n} users, concurrency {args.concurrency}", {
        "registered": len(storm.register_s),
        "fully_provisioned": len(storm.provision_s),
        "not_provisioned_in_time": storm.unprovisioned,
        "errors": storm.errors or 0,
        "storm_s": round(storm_s, 2),
        "registrations_per_s": round(len(storm.register_s) / storm_s, 1),
        "register_latency": distribution(storm.register_s),
        "register_to_provisioned": distribution(storm.provision_s),
        "healthz_during": distribution(storm.healthz_s),
    }, as_json=args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=1000, help="users to register")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--poll-ms", type=float, default=10, help="first GET /v1/me interval")
    parser.add_argument("--max-poll-ms", type=float, default=50, help="longest interval")
    parser.add_argument("--provision-timeout", type=float, default=30, help="seconds")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
