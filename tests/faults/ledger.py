"""The ledger of the fault suite: everything the server acknowledged to its load
clients, and the audit that compares it with Postgres and JetStream once the system is
quiet. Lost is what was acknowledged and is not there (or is there with less than was
acknowledged); doubled is what is there more than once.

Each scenario ends with one Figures row; the suite prints them as a table. A row that
has nothing to lose or to double (abuse that is refused, a reader that is dropped)
leaves those figures out (None, printed `-`) rather than print a 0 it did not count.
"""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson
import trio_asyncio
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from bus.subjects import USER_REGISTERED
from server.process import Running
from tests.helpers import bearer, unique_name
from tests.provisioned import FULL, counts

PASSWORD = "correct horse"


@dataclass
class Figures:
    scenario: str
    load: str
    fault: str
    # From the end of the fault until everything holds again; None where nothing had to
    # recover (abuse the server refuses as it comes: printed "-").
    recovery_s: float | None
    lost: int | None  # None: the scenario does not count it (printed "-")
    doubled: int | None
    notes: str = ""


TABLE: list[Figures] = []


def _count(figure: int | None) -> str:
    return "-" if figure is None else str(figure)


def _seconds(figure: float | None) -> str:
    return "-" if figure is None else f"{figure:.1f}"


def record(figures: Figures) -> None:
    TABLE.append(figures)
    print(f"{figures.scenario}: load {figures.load}; fault {figures.fault}; recovered in "
          f"{_seconds(figures.recovery_s)} s; lost {_count(figures.lost)}; doubled "
          f"{_count(figures.doubled)}" + (f"; {figures.notes}" if figures.notes else ""))


def table() -> list[str]:
    head = ("scenario", "load", "fault", "recovery s", "lost", "doubled", "notes")
    rows = [head, *((f.scenario, f.load, f.fault, _seconds(f.recovery_s), _count(f.lost),
                     _count(f.doubled), f.notes) for f in TABLE)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


class Load:
    """HTTP clients for a load of many requests at once: several small connection pools,
    as httpx's pool costs time in proportion to its size for every request."""

    def __init__(self, base_url: str, *, concurrency: int, per_client: int = 20) -> None:
        self._clients = [httpx.AsyncClient(base_url=base_url, timeout=30,
                                           limits=httpx.Limits(max_connections=per_client))
                         for _ in range(max(1, concurrency // per_client))]
        self._next = 0

    def client(self) -> httpx.AsyncClient:
        self._next = (self._next + 1) % len(self._clients)
        return self._clients[self._next]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@dataclass
class Ledger:
    users: dict[str, str] = field(default_factory=dict)  # user id -> its token, per 201
    characters: dict[str, str] = field(default_factory=dict)  # character id -> user id
    statuses: Counter[int] = field(default_factory=Counter)  # every HTTP status answered
    refused: list[str] = field(default_factory=list)  # usernames answered 503: not written

    async def register(self, client: httpx.AsyncClient) -> int:
        """One registration; a 201 goes in the ledger. The status (0: no answer)."""
        name = unique_name("f")
        try:
            response = await client.post("/v1/auth/register", json={
                "username": name, "email": f"{name}@example.com", "password": PASSWORD})
        except httpx.TransportError:
            self.statuses[0] += 1
            return 0
        self.statuses[response.status_code] += 1
        if response.status_code == 201:
            body = response.json()
            self.users[body["user_id"]] = body["token"]
        elif response.status_code == 503:
            self.refused.append(name)
        return response.status_code

    async def create_character(self, client: httpx.AsyncClient, user_id: str) -> int:
        try:
            response = await client.post("/v1/characters", headers=bearer(self.users[user_id]),
                                         json={"name": f"C{uuid.uuid4().hex[:10]}"})
        except httpx.TransportError:
            self.statuses[0] += 1
            return 0
        self.statuses[response.status_code] += 1
        if response.status_code == 201:
            self.characters[response.json()["id"]] = user_id
        return response.status_code


@dataclass
class Audit:
    lost: int
    doubled: int
    detail: dict[str, int]

    def __str__(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.detail.items() if v) or "nothing amiss"


async def _stored(conn: asyncpg.Connection, users: list[str], characters: list[str],
                  refused: list[str]) -> tuple[int, int, int]:
    found_users = await conn.fetchval(
        "SELECT count(*) FROM auth.users WHERE id = ANY($1::uuid[])",
        [uuid.UUID(u) for u in users])
    found_characters = await conn.fetchval(
        "SELECT count(*) FROM characters.characters WHERE id = ANY($1::uuid[])",
        [uuid.UUID(c) for c in characters])
    found_refused = await conn.fetchval(
        "SELECT count(*) FROM auth.users WHERE username = ANY($1::text[])", refused)
    return int(found_users), int(found_characters), int(found_refused)


async def _announced(nc: NatsClient) -> Counter[str]:
    """How many times each user was announced in the USERS stream (user.registered)."""
    js = nc.jetstream()
    info = await js.stream_info("USERS")
    seen: Counter[str] = Counter()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            message = await js.get_msg("USERS", seq)
        except NotFoundError:
            continue
        if message.subject == USER_REGISTERED:
            with suppress(orjson.JSONDecodeError, AttributeError):  # a poison event
                seen[str(orjson.loads(message.data or b"{}").get("userId"))] += 1
    return seen


async def parts(running: Running, ledger: Ledger) -> tuple[int, int]:
    """Provisioning's parts missing and doubled over the ledger's users (each has the
    characters it was acknowledged besides the default one)."""
    mine = Counter(ledger.characters.values())
    missing = doubled = 0
    for user_id, row in (await counts(running, list(ledger.users))).items():
        expected = {**FULL, "characters": FULL["characters"] + mine[user_id]}
        missing += sum(max(0, expected[k] - row[k]) for k in FULL)
        doubled += sum(max(0, row[k] - expected[k]) for k in FULL)
    return missing, doubled


async def audit(running: Running, ledger: Ledger, *, provisioned: bool = True) -> Audit:
    """The ledger against Postgres (every user and character acknowledged, each user's
    four parts once, no user that was refused with a 503) and JetStream (each user
    announced exactly once)."""
    users = list(ledger.users)
    found_users, found_characters, refused_written = await running.services.pg.transact(
        _stored, users, list(ledger.characters), ledger.refused)
    detail = {"users lost": len(users) - found_users,
              "characters lost": len(ledger.characters) - found_characters,
              # a 503 says nothing was written: an account there anyway is half a write
              "users doubled (written though refused)": refused_written}
    if provisioned:
        missing, doubled = await parts(running, ledger)
        detail["parts missing"], detail["parts doubled"] = missing, doubled
        announced = await trio_asyncio.aio_as_trio(_announced)(running.services.bus._nc)
        detail["events lost"] = sum(1 for u in users if announced[u] == 0)
        detail["events doubled"] = sum(announced[u] - 1 for u in users if announced[u] > 1)
    lost = sum(v for k, v in detail.items() if "lost" in k or "missing" in k)
    doubled = sum(v for k, v in detail.items() if "doubled" in k)
    return Audit(lost, doubled, detail)
