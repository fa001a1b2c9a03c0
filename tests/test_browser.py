"""The browser client in a real browser (docs/client.md): Debian's chromium driven by
Playwright, against `outpost dev` as a newcomer runs it.

Covers: two players register, create a character and join through the page; one
moves with the keyboard and the other sees it move on its canvas (the page's state,
as drawn); an error from the server is shown in words; a screenshot of each page is
kept in tests/artifacts/ (git-ignored) for a person to look at.

Rules: `outpost dev` is a subprocess against the session's services; the browser
is the system's chromium (`make test` installs it: Playwright's own download does
not work here); with no chromium the test is skipped, loudly. The browsers are
driven by tests/browser_play.py in a process of its own; its waits are
Playwright's, bounded.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from server.config import Settings
from tests.processes import process_env, started

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="NO CHROMIUM: `make test` installs Debian's chromium "
                             "(apt-get install -y chromium); it could not here")


ARENA = Path(__file__).parent / "arena.json"  # walls to draw and bump into, two spawn points


async def scenario(settings: Settings, tmp_path: Path, name: str,
                   timeout_s: float = 120) -> dict[str, Any]:
    """tests/browser_play.py's scenario `name` against `outpost dev` on the arena map."""
    env = process_env(settings, OUTPOST_DATA_DIR=str(tmp_path / "data"), WORLD_MAP=str(ARENA))
    async with started(tmp_path, "dev", env=env) as dev:
        with trio.fail_after(timeout_s):
            done = await trio.run_process(
                [sys.executable, "-m", "tests.browser_play", name, dev.url, str(ARTIFACTS)],
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
    # The victim walked away and the shooter's page drew it gliding: every frame within
    # 3 units of the last (80 units/s is 1.3 a frame; snapshots come 4 units apart).
    assert seen["watched"][-1]["x"] > seen["before"]["x"] + 60, seen["watched"][-1]
    assert len(seen["watched"]) > 40, len(seen["watched"])
    assert seen["watched_jump"] < 3.0, seen["watched_jump"]
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
    seen = await scenario(settings, tmp_path, "smooth")
    assert seen["frames"] > 60, seen
    assert seen["end"]["x"] > seen["start"]["x"] + 60, seen
    # The bound (tests/browser_play.py, OWN_JUMP_BOUND: 2.5 world units between frames).
    assert seen["max_jump"] <= seen["bound"], seen


async def test_errors_stay_until_dismissed(settings: Settings, tmp_path: Path) -> None:
    seen = await scenario(settings, tmp_path, "errors")
    assert "weapon must be one of pistol, rifle, shotgun" in seen["text"], seen
    assert len(seen["still"]) == 1 and "weapon must be one of" in seen["still"][0], seen
    assert seen["after"] == 0, seen
    assert "already have a character with that name" in seen["name_taken"], seen
    assert seen["socket_closed"] is True and seen["token"] == [None, None], seen


async def test_the_client_module_recovers_from_snapshots_it_cannot_apply(
    settings: Settings, tmp_path: Path
) -> None:
    """outpost-client.js (docs/client.md, `resync`): a delta against a tick it does not
    hold, an update of a player it never saw, bytes that do not decode: it asks for a
    complete snapshot once, drops deltas until it comes, and carries on from it."""
    env = process_env(settings, OUTPOST_DATA_DIR=str(tmp_path / "data"))
    async with started(tmp_path, "dev", env=env) as dev:
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "tests.browser_client", dev.url],
                capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    found = orjson.loads(done.stdout)
    assert found["seen"] == {"followed": 1.5, "waiting": 1.5, "resynced": 10.0, "last": 12.0}
    assert found["sent"] == [{"type": "resync"}, {"type": "resync"}], found
    first, second, third = found["resyncs"]
    assert "against tick 7" in first and "eid 7" in second and "decode" in third, found
