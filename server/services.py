"""The actors and services one process runs, started in dependency order."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from auth.accounts import Accounts, Limits
from auth.passwords import Passwords
from auth.ratelimit import SlidingWindowLimiter
from auth.sessions import Sessions
from auth.tokens import Tokens
from bus.connection import Bus
from bus.relay import OutboxRelay
from characters.service import Characters
from console.access import Access
from console.service import Console
from persistence.cache import Cache
from persistence.migrate import apply_migrations
from persistence.postgres import Postgres
from rules.api import Setup
from rules.loading import load
from server.config import Settings, nats_tls
from server.ws.outlet import fan_out
from zones.world import World, WorldConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: Settings
    pg: Postgres
    cache: Cache
    bus: Bus
    relay: OutboxRelay
    tokens: Tokens
    sessions: Sessions  # refresh and logout
    accounts: Accounts
    characters: Characters
    world: World
    access: Access  # the disabled accounts and ended sessions, and the word to sockets
    console: Console


async def start_services(nursery: trio.Nursery, settings: Settings, *, name: str) -> Services:
    """Start the backing actors in `nursery` (ready when this returns) and build the services.

    Must run inside `trio_asyncio.open_loop()`. Cancelling `nursery` stops them.
    """
    pg = await nursery.start(Postgres(settings.database_url, timeout_s=settings.db_timeout_s).run)
    applied = await pg.transact(apply_migrations)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    cache = await nursery.start(Cache(settings.redis_url, timeout_s=settings.redis_timeout_s,
                                      ca_file=settings.redis_tls_ca).run)
    bus = await nursery.start(Bus(settings.nats_url, name=name, replicas=settings.nats_replicas,
                                  tls=nats_tls(settings), creds_file=settings.nats_creds).run)
    relay = await nursery.start(OutboxRelay(pg, bus, poll_s=settings.outbox_poll_s).run)
    world = World(world_config(settings), pg, cache, bus)  # run_process starts it
    access = Access(pg, bus, world.refusals, token_ttl_s=settings.jwt_ttl_s)  # the edge starts it
    tokens = Tokens(settings.jwt_keys, ttl_s=settings.jwt_ttl_s, disabled=access.disabled,
                    ended=access.ended)
    sessions = Sessions(pg, tokens, ttl_s=settings.refresh_ttl_s, on_ended=access.session_ended)
    passwords = Passwords(time_cost=settings.argon2_time_cost,
                          memory_kib=settings.argon2_memory_kib)
    accounts = Accounts(pg, passwords, sessions, on_committed=relay.wake,
                        limits=limits(settings))
    characters = Characters(
        pg, cache, zone_id=settings.world_zone_id,
        max_per_user=settings.max_characters_per_user,
        cache_ttl_s=settings.character_cache_ttl_s, on_committed=relay.wake,
    )
    return Services(settings, pg, cache, bus, relay, tokens, sessions, accounts, characters,
                    world, access, Console(pg, world, access))


def limits(settings: Settings) -> Limits:
    login, register = settings.login_rate_window_s, settings.register_rate_window_s
    return Limits(
        login_per_address=SlidingWindowLimiter(limit=settings.login_rate_per_address,
                                               window_s=login),
        login_failures_per_account_and_address=SlidingWindowLimiter(
            limit=settings.login_failures_per_account_and_address, window_s=login),
        login_failures_per_account=SlidingWindowLimiter(
            limit=settings.login_failures_per_account, window_s=login),
        register_per_address=SlidingWindowLimiter(limit=settings.register_rate_per_address,
                                                  window_s=register),
        register_total=SlidingWindowLimiter(limit=settings.register_rate_total,
                                            window_s=register),
    )


def world_config(settings: Settings) -> WorldConfig:
    return WorldConfig(
        game=load(settings.world_rules),
        setup=Setup(max_step=settings.world_max_step, map_path=settings.world_map,
                    max_rewind_s=settings.world_max_rewind_s,
                    respawn_s=settings.world_respawn_s),
        bounds=settings.world_bounds,
        tick_rate_hz=settings.world_tick_rate_hz, checkpoint_s=settings.world_checkpoint_s,
        lease_s=settings.zone_lease_s, listed=settings.zones,
        view_radius=settings.world_view_radius, fan_out=fan_out)
