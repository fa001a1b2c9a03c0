"""The browser client in a real browser (docs/client.md): Debian's chromium driven by
Playwright, against `outpost dev` as a newcomer runs it.

Covers: two players fight through their pages until one dies, sees the kill and
respawns (the kill feed in both); own movement is drawn without jumps, measured frame by
frame; errors stay until dismissed; the page and outpost-client.js on their own ride out
a zone restart and an api restart; the operator console kicks, rescues and disables,
beside the pages of the players it acts on. Screenshots of each page are kept in
tests/artifacts/ (git-ignored) for a person to look at.

Rules: `outpost dev` is a subprocess against the session's services; the browser
is the system's chromium (`make test` installs it: Playwright's own download does
not work here); with no chromium the test is skipped, loudly. The browsers are
driven by tests/browser_play.py (and tests/browser_console.py) in a process of its own;
their waits are Playwright's, bounded.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from server.config import Settings
from tests.helpers import eventually
from tests.processes import Outpost, process_env, started

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="NO CHROMIUM: `make test` installs Debian's chromium "
                             "(apt-get install -y chromium); it could not here")


ARENA = Path(__file__).parent / "arena.json"  # walls to draw and bump into, two spawn points


async def scenario(settings: Settings, tmp_path: Path, name: str,
                   timeout_s: float = 120, **extra: str) -> dict[str, Any]:
    """tests/browser_play.py's scenario `name` (or tests/browser_console.py, for "console")
    against `outpost dev` on the arena map; the scenario's process reaches its services."""
    env = process_env(settings, OUTPOST_DATA_DIR=str(tmp_path / "data"), WORLD_MAP=str(ARENA),
                      **extra)
    command = ["tests.browser_console"] if name == "console" else ["tests.browser_play", name]
    async with started(tmp_path, "dev", env=env) as dev:
        with trio.fail_after(timeout_s):
            done = await trio.run_process(
                [sys.executable, "-m", *command, dev.url, str(ARTIFACTS)], env=env,
                capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    found: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    assert found["script_errors"] == [], found["script_errors"]
    return found


async def test_two_players_fight_until_one_dies_and_respawns(
    settings: Settings, tmp_path: Path
) -> None:
    seen = await scenario(settings, tmp_path, "fight")
    me, them = seen["me"], seen["them"]
    # The victim walked away and the shooter's page drew it gliding: no frame moved it
    # more than 2.5 units (80 units/s is 1.3 a frame; snapshots come 4 units apart).
    assert seen["watched"][-1]["x"] > seen["before"]["x"] + 60, seen["watched"][-1]
    assert_smooth(seen["watched_jumps"])
    assert seen["hud"]["zone"] == "z1" and seen["hud"]["protocol"] == "v2", seen["hud"]
    assert seen["hud"]["players"] == "1" and seen["hud"]["range"] == "1", seen["hud"]
    assert seen["hud"]["link"] == "open", seen["hud"]
    # The pistol's 25 damage: four hits kill; a few shots may be refused as too soon.
    assert seen["mid_fight"] and 4 <= seen["shots"] <= 16, seen["shots"]
    assert "You died. Respawning in" in seen["overlay"], seen["overlay"]
    [kill] = seen["kill_feed"]
    assert (kill["killer"], kill["victim"], kill["weapon"]) == (me["id"], them["id"], "pistol")
    line = f"{me['name']} killed {them['name']} (pistol)"
    assert seen["feeds"] == {"shooter": line, "victim": line}, seen["feeds"]
    spawns = [(0.0, 0.0), (-60.0, -60.0)]  # tests/arena.json
    assert (seen["respawned"]["x"], seen["respawned"]["y"]) in spawns, seen["respawned"]
    for name in ("fight-mid", "fight-killed"):
        for who in ("shooter", "victim"):
            assert (ARTIFACTS / f"{name}-{who}.png").stat().st_size > 10_000


async def test_own_movement_is_drawn_without_jumps(settings: Settings, tmp_path: Path) -> None:
    # A small world, so that its edge is in view (tests/artifacts/smooth.png).
    seen = await scenario(settings, tmp_path, "smooth", WORLD_VIEW_RADIUS="300",
                          WORLD_BOUNDS="-400,-400,400,400")
    assert_smooth(seen["jumps"])
    assert seen["end"]["x"] > seen["start"]["x"] + 60, seen
    # The view shows the view radius (and a margin) from the player to its shorter edge.
    assert seen["half_view"] == pytest.approx(315, abs=1), seen


def assert_smooth(jumps: dict[str, Any]) -> None:
    """tests/browser_play.py's `jumps`: no frame moved the player farther than JUMP_BOUND
    (2.5 world units), or, for a frame late by the machine (over 31 ms), farther than
    walking goes in that time; and most frames were on time, so the bound was tested."""
    assert jumps["frames"] > 40, jumps
    assert jumps["too_far"] == [], jumps
    assert jumps["largest"] <= jumps["bound"] == 2.5, jumps
    assert jumps["late_frames"] < jumps["frames"] / 4, jumps


async def test_errors_stay_until_dismissed(settings: Settings, tmp_path: Path) -> None:
    seen = await scenario(settings, tmp_path, "errors")
    assert "weapon must be one of pistol, rifle, shotgun" in seen["text"], seen
    assert len(seen["still"]) == 1 and "weapon must be one of" in seen["still"][0], seen
    assert seen["after"] == 0, seen
    assert "already have a character with that name" in seen["name_taken"], seen
    assert seen["socket_closed"] is True and seen["token"] == [None, None], seen


async def test_the_console_kicks_rescues_and_disables(settings: Settings, tmp_path: Path
                                                      ) -> None:
    """tests/browser_console.py: an operator at /console sees z1 and its player, kicks it
    (the player's page says an operator removed it, and does not reconnect); rescues a
    character stranded in a zone that no longer runs (its owner then joins it, in z1);
    disables an account (its open page is closed and logged out, its next login
    refused). A player's login to the console is turned away."""
    seen = await scenario(settings, tmp_path, "console")
    assert "only operators" in seen["not_operator"] and "operator grant" in seen["not_operator"]
    assert seen["desk_hidden"], seen
    assert seen["zone_row"].split()[:2] == ["z1", "up"], seen["zone_row"]
    assert "Kickme" in seen["player_row"] and "hp 100" in seen["player_row"], seen
    assert seen["kicked"] == "An operator removed you from the game.", seen
    assert seen["kicked_link"] == "closed", seen  # and not reconnecting
    assert "zone_unavailable" in seen["stranded"], seen
    assert "stranded" in seen["account"], seen
    assert seen["rescued_zone"] == "z1", seen
    assert seen["disabled"] == "This account has been disabled.", seen
    assert "this account has been disabled" in seen["login_refused"], seen  # the login
    done = [line.split(": ", 1)[1] for line in seen["done"].splitlines()]  # newest first
    assert done[1:] == ["moved Lost from z9 to z1", "kicked Kickme from z1"], done
    assert done[0].startswith("disabled web_"), done


async def client_scenario(settings: Settings, tmp_path: Path, name: str) -> Any:
    """tests/browser_client.py's scenario `name` (outpost-client.js on sockets it scripts)
    in a page of `outpost dev`; what it found."""
    env = process_env(settings, OUTPOST_DATA_DIR=str(tmp_path / "data"))
    async with started(tmp_path, "dev", env=env) as dev:
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "tests.browser_client", name, dev.url],
                capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return orjson.loads(done.stdout)


async def test_the_client_module_recovers_from_snapshots_it_cannot_apply(
    settings: Settings, tmp_path: Path
) -> None:
    """outpost-client.js (docs/client.md, `resync`): a delta against a tick it does not
    hold, an update of a player it never saw, bytes that do not decode: it asks for a
    complete snapshot once, drops deltas until it comes, and carries on from it."""
    found = await client_scenario(settings, tmp_path, "resync")
    assert found["seen"] == {"followed": 1.5, "waiting": 1.5, "resynced": 10.0, "last": 12.0}
    assert found["sent"] == [{"type": "resync"}, {"type": "resync"}], found
    first, second, third = found["resyncs"]
    assert "against tick 7" in first and "eid 7" in second and "decode" in third, found


async def test_the_client_module_reconnects_only_when_it_is_worth_it(
    settings: Settings, tmp_path: Path
) -> None:
    """outpost-client.js's reconnect (docs/client.md), on sockets the test scripts: a lost
    socket (1006) or a server going away (1001) gets a new socket with the same character
    joined; a zone_unavailable that persists does too; 1000, 4001, 4008, 4009, 4010 and 4011
    never; an unreachable server is tried with backoff doubling to its ceiling, then given
    up; an upgrade refused to a token the server refuses is final (4001)."""
    found = await client_scenario(settings, tmp_path, "closes")
    words = {1000: "The connection was closed.", 4001: "Your session has expired: log in again.",
             4009: "This character was taken over by another session.",
             4010: "An operator removed you from the game.",
             4011: "This account has been disabled."}
    for code in ("1000", "4001", "4008", "4009", "4010", "4011"):
        seen = found[code]
        assert seen["sockets"] == 1, (code, seen)
        [closed] = seen["events"]
        assert (closed["type"], closed["code"]) == ("close", int(code)), (code, seen)
        assert closed["words"] == words.get(int(code), closed["words"]), (code, seen)
    for code in ("1006", "1001"):
        seen = found[code]
        assert seen["sockets"] == 2 and seen["sent"] == [{"type": "join", "character_id": "c1"}]
        kinds = [e["type"] for e in seen["events"]]
        assert kinds == ["welcome", "reconnecting", "welcome", "reconnected"], (code, kinds)
        assert seen["events"][1]["attempt"] == 1 and seen["events"][1]["delayMs"] <= 5
    unreachable = found["unreachable"]
    delays = [e["delayMs"] for e in unreachable["events"] if e["type"] == "reconnecting"]
    assert delays == [10, 20, 40, 80, 80], unreachable  # the draws were 0.999: the ceilings
    assert unreachable["sockets"] == 6 and unreachable["events"][-1]["type"] == "close"
    assert "Gave up after 5 attempts" in unreachable["connected"], unreachable
    refused = found["refused"]
    assert refused["sockets"] == 1 and refused["events"][0]["code"] == 4001, refused
    assert found["late"]["connected"] == "v2" and found["late"]["sockets"] == 3, found["late"]
    zone = found["zone"]
    assert zone["sockets"] == 2 and zone["sent"] == [{"type": "join", "character_id": "c1"}]
    assert [e["type"] for e in zone["events"]][:5] == [
        "welcome", "error", "reconnecting", "welcome", "reconnected"], zone
    game = found["game"]
    assert game["player"]["hp"] == 75 and game["player"]["x"] == 1.5, game
    assert game["events"][0]["events"][0]["kind"] == "hit", game
    assert game["sent"][1:] == [
        {"type": "fire", "weapon": "pistol", "ax": 1, "ay": 0, "tick": 2, "seq": 1},
        {"type": "move", "dx": 1, "dy": 0, "seq": 2}], game


def free_port() -> int:
    """A port for an api to listen on again after a restart (so the page's URL stays)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """api, zone z1 and a provisioner, each its own process; the api on a fixed port, so
    that a page keeps its URL across the api's restart."""

    def __init__(self, tmp_path: Path, env: dict[str, str], stack: AsyncExitStack) -> None:
        self.tmp_path, self.env, self.stack = tmp_path, env, stack
        self.api: Outpost | None = None
        self.zone: Outpost | None = None

    async def start(self, role: str) -> None:
        args = ("api",) if role == "api" else ("zone", "z1")
        process = await self.stack.enter_async_context(started(self.tmp_path, *args, env=self.env))
        setattr(self, role, process)
        if self.api is not None:
            await zone_up(self.api.url)

    async def stop(self, role: str) -> None:
        process = getattr(self, role)
        assert process is not None
        await process.stop()


async def zone_up(url: str) -> None:
    async def up() -> bool:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            zones = (await http.get("/v1/world/zones")).json()["zones"]
        return any(z["zone"] == "z1" and z["up"] for z in zones)

    await eventually(up, "zone z1 up", tries=200)


async def driven(cluster: Cluster, command: list[str], timeout_s: float) -> dict[str, Any]:
    """Runs `command`, a browser script that prints `{"step": "stop-zone"}` (or start-zone,
    stop-api, start-api) lines and waits for an "ok" line on stdin; does each step; the
    script's last line is what it found."""
    log = cluster.tmp_path / f"browser-{command[3]}.log"
    with trio.fail_after(timeout_s), open(log, "wb") as errors:  # noqa: ASYNC230
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None and process.stdin is not None
        buffered = b""
        try:
            while True:
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    break
                buffered += chunk
                while b"\n" in buffered:
                    line, buffered = buffered.split(b"\n", 1)
                    told = orjson.loads(line)
                    if "step" not in told:
                        await process.wait()
                        return dict(told)
                    action, role = told["step"].split("-")
                    await (cluster.start(role) if action == "start" else cluster.stop(role))
                    await process.stdin.send_all(b"ok\n")
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
    raise AssertionError(f"the browser script ended without an answer:\n{log.read_text()[-3000:]}")


@pytest.fixture
async def cluster(settings: Settings, tmp_path: Path) -> AsyncIterator[Cluster]:
    env = process_env(settings, WORLD_MAP=str(ARENA), HTTP_PORT=str(free_port()),
                      WORLD_ZONES="z1", WORLD_CHECKPOINT="1")
    async with AsyncExitStack() as stack:
        running = Cluster(tmp_path, env, stack)
        await running.start("zone")
        await stack.enter_async_context(started(tmp_path, "provisioner", env=env))
        await running.start("api")
        yield running


async def test_the_page_rides_out_a_zone_restart_and_an_api_restart(cluster: Cluster) -> None:
    assert cluster.api is not None
    seen = await driven(cluster, [sys.executable, "-m", "tests.browser_play", "outage",
                                  cluster.api.url, str(ARTIFACTS)], timeout_s=180)
    assert seen["script_errors"] == [], seen
    zone_down = seen["zone_down"]
    assert "zone is unavailable" in zone_down["banner"], zone_down
    assert any("zone_unavailable" in e for e in zone_down["errors"]), zone_down
    assert seen["zone_back"]["link"] == "open", seen
    assert "Reconnecting (attempt" in seen["api_down"]["banner"], seen
    back = seen["api_back"]
    assert back["me"] == seen["own"]["id"] and back["errors"] == [], back
    assert back["own"]["x"] > seen["own"]["x"] + 10, back  # it moves again after all that


async def test_the_client_module_reconnects_to_a_server_that_comes_back(
    cluster: Cluster
) -> None:
    assert cluster.api is not None
    seen = await driven(cluster, [sys.executable, "-m", "tests.browser_client", "reconnect",
                                  cluster.api.url], timeout_s=120)
    welcomes = [e for e in seen["log"] if e["type"] == "welcome"]
    assert len(welcomes) == 2, seen["log"]
    assert {w["character"] for w in welcomes} == {seen["character"]}, seen["log"]
    reconnecting = [e for e in seen["log"] if e["type"] == "reconnecting"]
    assert reconnecting[0]["reason"].startswith("The server is going away"), reconnecting
    assert [e["attempt"] for e in reconnecting] == list(range(1, len(reconnecting) + 1))
    assert all(0 <= e["delayMs"] <= min(2000, 500 * 2 ** (e["attempt"] - 1))
               for e in reconnecting), reconnecting
    assert seen["log"][-1]["type"] == "reconnected" and seen["status"] == "open", seen
