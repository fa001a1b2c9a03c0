"""`outpost`: the process entry points (see docs/architecture.md, "Processes")."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import ParamSpec, TypeVar

import trio
import trio_asyncio

from persistence.errors import Refused
from persistence.migrate import apply_migrations
from persistence.postgres import Postgres, Work
from persistence.users import set_operator
from server import logs
from server.config import ConfigError, Settings, load_dev_settings, load_settings, refused
from server.devstack import DevStack, StackError
from server.listening import CannotListen
from server.process import Roles, Running, run_process, steady_gc, until_signalled

log = logging.getLogger("outpost")

URL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "NATS_URL")
P = ParamSpec("P")
T = TypeVar("T")
# In the data folder while `outpost dev` runs: its pid and services' URLs, KEY=value lines.
DEV_URLS = "dev.env"


def _kept_secret(data_dir: Path) -> str:
    """The dev JWT secret: made once, kept in the data folder so tokens survive restarts."""
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read, from its first byte."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)


@contextmanager
def _refusals_named(settings: Settings) -> Iterator[None]:
    """A service that turns this process away (its credentials, its TLS) stops it as a bad
    setting does: one line naming the variable, exit status 2."""
    try:
        yield
    except (Refused, BaseExceptionGroup) as exc:
        refusal = _within(exc, Refused)
        if refusal is None:
            raise
        raise refused(settings, refusal) from None


async def _serve(settings: Settings, roles: Roles, banner: str = "") -> None:
    logs.configure(role=roles.role, form=settings.log_format, level=_log_level())
    shutdown = trio.Event()
    with _refusals_named(settings):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_signalled, shutdown)
            running = await nursery.start(partial(run_process, settings, roles=roles,
                                                  shutdown=shutdown))
            steady_gc()
            where = (f"HTTP {running.http_url}" if running.http_url
                     else _doing(roles, running))
            if settings.metrics_port is not None or not running.http_url:  # a port of its own
                where += f"; metrics {running.metrics_url}"
            log.info("up: %s", where)
            # Redacted as log lines are: a URL in the banner may hold a password.
            print(logs.redact(f"outpost: {where}{banner}"), flush=True)
            await shutdown.wait()
            # until_signalled has returned; run_process finishes its graceful shutdown itself.


def _doing(roles: Roles, running: Running) -> str:
    """What a process without the API does: its zones as they are (a standby says so and
    who holds the zone: the start line must not claim a zone it does not run)."""
    if not running.zones:
        return f"running {roles.name}"
    return "; ".join(f"running zone {host.zone_id}" if host.active
                     else f"zone {host.zone_id}: standing by (held by {host.held_by})"
                     for host in running.zones)


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(os.environ.get("OUTPOST_DATA_DIR", args.data_dir)).resolve()


def cmd_dev(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    missing = [name for name in URL_VARIABLES if not os.environ.get(name)]
    stack = DevStack(data_dir, wanted=missing)
    try:
        with stack:
            urls = {name: os.environ.get(name) or stack.urls()[name] for name in URL_VARIABLES}
            settings = load_dev_settings(os.environ, **urls,
                                     JWT_SECRET=_kept_secret(data_dir),
                                     LOG_FORMAT="text")
            where = "\n".join(
                f"  {name}={url}{'  (embedded)' if name in missing else ''}"
                for name, url in urls.items())
            banner = (f"\n{where}\n  data in {data_dir}; Ctrl-C stops everything; "
                      "a second zone: make zone ZONE=z2")
            roles = Roles(http=True, provisioner=True, zones=(settings.world_zone_id,))
            running = data_dir / DEV_URLS
            # Private: a URL given may hold a password.
            _write_private(running, f"OUTPOST_DEV_PID={os.getpid()}\n"
                           + "".join(f"{name}={url}\n" for name, url in urls.items()))
            try:
                trio.run(_serve, settings, roles, banner)
            finally:
                running.unlink(missing_ok=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C before the server was up; the stack is stopped by `with`
    return _stopped()


def _dev_urls(data_dir: Path) -> dict[str, str]:
    """The services of the `outpost dev` running with its data in `data_dir`, from the
    file it keeps there while it runs (a zone started with --dev joins its world)."""
    try:
        lines = (data_dir / DEV_URLS).read_text().splitlines()
    except FileNotFoundError:
        lines = []
    found = dict(line.split("=", 1) for line in lines if "=" in line)
    pid = found.pop("OUTPOST_DEV_PID", "")
    if not pid.isdigit() or not Path(f"/proc/{pid}").exists():  # none, or left by a kill -9
        raise ConfigError(f"--dev: no `outpost dev` is running with its data in {data_dir} "
                          "(start it first: make dev)")
    return found


def cmd_api(args: argparse.Namespace) -> int:
    trio.run(_serve, load_settings(os.environ), Roles(http=True))
    return _stopped()


def cmd_zone(args: argparse.Namespace) -> int:
    if args.dev:  # the services and secret of the running `outpost dev`, text logs
        data_dir = _data_dir(args)
        settings = load_dev_settings(os.environ, **_dev_urls(data_dir),
                                 JWT_SECRET=_kept_secret(data_dir), LOG_FORMAT="text")
    else:
        settings = load_settings(os.environ)
    trio.run(_serve, settings, Roles(http=False, zones=(args.zone_id,)))
    return _stopped()


def cmd_provisioner(args: argparse.Namespace) -> int:
    trio.run(_serve, load_settings(os.environ), Roles(http=False, provisioner=True))
    return _stopped()


def _stopped() -> int:
    """A server process's last line, once its shutdown is complete (requests answered,
    zones saved and handed back, consumers settled, embedded servers stopped): until it,
    Ctrl-C is still at work."""
    log.info("stopped")
    print("outpost: stopped", flush=True)
    return 0


def _on_postgres(settings: Settings, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `work(conn, *args)` in one transaction of DATABASE_URL's, then disconnect."""

    async def transact() -> T:
        with _refusals_named(settings):
            async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
                pg: Postgres = await nursery.start(Postgres(
                    settings.database_url, timeout_s=settings.db_timeout_s).run)
                done = await pg.transact(work, *args, **kwargs)
                nursery.cancel_scope.cancel()
                return done

    return trio.run(transact)


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ, JWT_SECRET="not needed to migrate")
    applied = _on_postgres(settings, apply_migrations)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    """Grant or take back the operator role (the console's routes): on the command line
    only, by whoever can reach the database, never over HTTP."""
    settings = load_settings(os.environ, JWT_SECRET="not needed to grant a role")
    granted = args.action == "grant"
    _on_postgres(settings, apply_migrations)  # the role's column may be new
    user = _on_postgres(settings, set_operator, args.username, granted)
    if user is None:
        print(f"outpost: no account is named {args.username!r}", file=sys.stderr)
        return 1
    print(f"{user.username} ({user.id}) is {'now' if granted else 'no longer'} an operator")
    return 0


def _log_level() -> str:
    return os.environ.get("LOG_LEVEL", "INFO").upper()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outpost", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="everything in one process, embedded services if no URLs")
    dev.add_argument("--data-dir", default=".outpost", help="where embedded services keep data")
    dev.set_defaults(run=cmd_dev)
    commands.add_parser("api", help="the HTTP API and the world's WebSocket edge"
                        ).set_defaults(run=cmd_api)
    zone = commands.add_parser("zone", help="run one zone (or stand by for it)")
    zone.add_argument("zone_id", help="the zone's id, e.g. z1")
    zone.add_argument("--dev", action="store_true",
                      help="join the world of the `outpost dev` running on --data-dir (its "
                           "services; unset URLs are taken from it)")
    zone.add_argument("--data-dir", default=".outpost", help="that `outpost dev`'s data")
    zone.set_defaults(run=cmd_zone)
    commands.add_parser("provisioner", help="the JetStream consumers that provision new users"
                        ).set_defaults(run=cmd_provisioner)
    migrate = commands.add_parser("migrate", help="apply SQL migrations, then exit")
    migrate.set_defaults(run=cmd_migrate)
    operator = commands.add_parser("operator", help="grant or take back the operator role "
                                   "(the console at /console)")
    operator.add_argument("action", choices=("grant", "revoke"))
    operator.add_argument("username")
    operator.set_defaults(run=cmd_operator)
    args = parser.parse_args(argv)
    # Until a process knows its settings (then _serve configures its log lines).
    logs.configure(role=args.command, form="text", level=_log_level())
    try:
        return int(args.run(args))
    except ConfigError as exc:  # its value may be a URL with a password in it
        print(logs.redact(f"outpost: configuration error: {exc}"), file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"outpost: {exc}", file=sys.stderr)
        return 1
    except (CannotListen, BaseExceptionGroup) as exc:  # raised in a task: within a group
        cannot = _within(exc, CannotListen)
        if cannot is None:
            raise
        print(f"outpost: {cannot}", file=sys.stderr)
        return 2


E = TypeVar("E", bound=BaseException)


def _within(exc: BaseException, kind: type[E]) -> E | None:
    """The `kind` that `exc` is or holds (in groups, however nested), if any."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _within(inner, kind)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
