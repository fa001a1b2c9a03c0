"""SQL migrations, applied in file-name order, recorded in public.schema_migrations.

All pending files run in one transaction under an advisory lock, so two
processes starting together neither race nor leave a half-migrated database.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

_LOCK_KEY = 7_001_001  # any constant shared by all Outpost processes


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("persistence.migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text()) for name in names]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply what is pending; return the names applied."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = await conn.fetch("SELECT version FROM public.schema_migrations")
    done = {row["version"] for row in rows}
    applied = []
    for version, sql in migration_files():
        if version in done:
            continue
        await conn.execute(sql)
        await conn.execute("INSERT INTO public.schema_migrations (version) VALUES ($1)", version)
        applied.append(version)
    return applied
