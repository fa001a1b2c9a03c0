"""`outpost` as a newcomer runs it: a real subprocess, real embedded services.

Rules: the dev server runs in its own data folder on free ports; the test reads
its banner, talks HTTP to it, stops it with SIGINT like Ctrl-C, and checks that
every process it started is gone. Waits are bounded loops, never bare sleeps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import trio

from server.devstack import free_port
from tests.helpers import eventually
from tests.processes import started
from tests.world import connect, joined, new_player, next_of, send, ws_url

URL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "NATS_URL", "JWT_SECRET")
START_TIMEOUT_S = 60


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    return {**env, "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024", **extra}


def _outpost(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=START_TIMEOUT_S)


def _banner_url(log: Path, process: subprocess.Popen[bytes]) -> str:
    """Wait (bounded) for the `outpost: HTTP <url>` banner in the server's output."""
    for _ in range(START_TIMEOUT_S * 10):
        for line in log.read_text().splitlines():
            if line.startswith("outpost: HTTP "):
                return line.removeprefix("outpost: HTTP ").strip()
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("outpost dev did not come up:\n" + log.read_text())


@contextmanager
def dev_server(data_dir: Path) -> Iterator[tuple[str, list[psutil.Process]]]:
    """Run `outpost dev`; yield its base URL and every process under it; stop with SIGINT."""
    port = free_port()
    log = data_dir / f"dev-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "dev"], stdout=output, stderr=subprocess.STDOUT,
            env=_env(OUTPOST_DATA_DIR=str(data_dir / "data"), HTTP_PORT=str(port)))
    try:
        url = _banner_url(log, process)
        assert url == f"http://127.0.0.1:{port}"
        children = psutil.Process(process.pid).children(recursive=True)
        yield url, children
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        # Its last line, once the embedded servers have stopped too.
        assert log.read_text().splitlines()[-1] == "outpost: stopped", log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_dev_comes_up_stops_on_sigint_and_keeps_accounts(tmp_path: Path) -> None:
    with dev_server(tmp_path) as (url, children):
        names = {child.name() for child in children}
        assert {"postgres", "redis-server", "nats-server"} <= names, names
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        registered = httpx.post(f"{url}/v1/auth/register", timeout=10, json={
            "username": "newcomer", "email": "newcomer@example.com", "password": "correct horse"})
        assert registered.status_code == 201, registered.text
        # dev runs the provisioning consumers in-process.
        auth = {"Authorization": f"Bearer {registered.json()['token']}"}
        for _ in range(100):
            me = httpx.get(f"{url}/v1/me", timeout=10, headers=auth).json()
            if me["active_character_id"] and me["player"] and me["progression"]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"outpost dev did not provision the account: {me}")
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {alive}"
    assert gone

    # A second run on the same folder keeps the first run's accounts (and JWT secret).
    with dev_server(tmp_path) as (url, _):
        login = httpx.post(f"{url}/v1/auth/login", timeout=10,
                           json={"username": "newcomer", "password": "correct horse"})
        assert login.status_code == 200, login.text
        me = httpx.get(f"{url}/v1/characters", timeout=10,
                       headers={"Authorization": f"Bearer {registered.json()['token']}"})
        assert me.status_code == 200, me.text


def test_api_without_configuration_names_the_variable() -> None:
    finished = _outpost("api", env=_env())
    assert finished.returncode == 2
    assert "DATABASE_URL is not set" in finished.stderr


def test_bad_value_names_the_variable(tmp_path: Path) -> None:
    finished = _outpost("dev", env=_env(OUTPOST_DATA_DIR=str(tmp_path), WORLD_TICK_RATE="fast"))
    assert finished.returncode == 2
    assert "WORLD_TICK_RATE='fast' is invalid" in finished.stderr
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers


# Never reached: a process whose port is taken stops before it connects to anything.
UNREACHED = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none",
             "REDIS_URL": "redis://127.0.0.1:9/0", "NATS_URL": "nats://127.0.0.1:9",
             "JWT_SECRET": "not used, but long enough to be accepted"}


def test_a_taken_port_stops_the_process_in_one_line_naming_the_variable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        for args, variable in ((("api",), "HTTP_PORT"), (("zone", "z1"), "METRICS_PORT"),
                               (("provisioner",), "METRICS_PORT")):
            finished = _outpost(*args, env=_env(**UNREACHED, HTTP_PORT=str(port),
                                                METRICS_PORT=str(port)))
            assert finished.returncode == 2, finished.stderr
            assert finished.stderr.splitlines() == [
                f"outpost: cannot listen on 127.0.0.1:{port} (address already in use): "
                f"set {variable} to a free port"], finished.stderr


async def test_a_second_zone_joins_the_running_dev_and_a_character_travels_into_it(
    tmp_path: Path,
) -> None:
    """`make zone ZONE=z2`: `outpost zone z2 --dev` finds the services of the `outpost dev`
    running on the same data folder; the dev's api learns of z2 and travel reaches it."""
    env = _env(OUTPOST_DATA_DIR=str(tmp_path / "data"))
    with dev_server(tmp_path) as (url, _):
        async with started(tmp_path, "zone", "z2", "--dev", env=env) as zone:
            assert zone.banner.startswith("running zone z2; metrics http://"), zone.banner
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                player = await new_player(http)

                async def listed() -> bool:
                    zones = (await http.get("/v1/world/zones")).json()["zones"]
                    return any(z["zone"] == "z2" and z["up"] for z in zones)

                await eventually(listed, "the dev's api to list z2 up")
            async with connect(ws_url(url, player["token"])) as conn:
                assert (await joined(conn, player["character"]["id"]))["zone"] == "z1"
                await send(conn, {"type": "travel", "zone": "z2"})
                assert (await next_of(conn, "welcome"))["zone"] == "z2"
            assert await zone.stop(signal.SIGINT) == 0
            assert zone.log.read_text().splitlines()[-1] == "outpost: stopped"
    # Once the dev has stopped, --dev says there is none to join.
    finished = await trio.run_process([sys.executable, "-m", "server.cli", "zone", "z2", "--dev"],
                                      env=env, check=False, capture_stderr=True)
    assert finished.returncode == 2
    assert b"no `outpost dev` is running" in finished.stderr, finished.stderr
