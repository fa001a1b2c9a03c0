"""The zone a task works for, for its log lines (server/logs.py puts it in each line).

Set once at the start of a zone's tasks (its actor, its host, a remote zone's link);
the tasks they start inherit it, so every line they log names the zone."""

from __future__ import annotations

from contextvars import ContextVar

ZONE: ContextVar[str | None] = ContextVar("zone", default=None)
