"""The outbox store: events kept in Postgres until JetStream acknowledges them."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class OutboxEvent:
    subject: str
    msg_id: str  # becomes Nats-Msg-Id, so a re-sent event is dropped by JetStream
    payload: bytes


@dataclass(frozen=True)
class PendingEvent:
    row_id: int
    event: OutboxEvent


async def add_event(conn: asyncpg.Connection, event: OutboxEvent) -> None:
    await conn.execute(
        "INSERT INTO outbox.events (subject, msg_id, payload) VALUES ($1, $2, $3)",
        event.subject, event.msg_id, event.payload,
    )


async def pending_events(conn: asyncpg.Connection, limit: int) -> list[PendingEvent]:
    rows = await conn.fetch(
        "SELECT id, subject, msg_id, payload FROM outbox.events ORDER BY id LIMIT $1", limit
    )
    return [PendingEvent(r["id"], OutboxEvent(r["subject"], r["msg_id"], bytes(r["payload"])))
            for r in rows]


async def delete_events(conn: asyncpg.Connection, row_ids: list[int]) -> None:
    await conn.execute("DELETE FROM outbox.events WHERE id = ANY($1::bigint[])", row_ids)


async def backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """How many events wait in the outbox, and the age in seconds of the oldest (0 if none)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
        " FROM outbox.events")
    return int(row["n"]), float(row["age"])
