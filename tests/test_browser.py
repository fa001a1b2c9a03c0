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


async def test_two_players_in_browsers_see_each_other_move(
    settings: Settings, tmp_path: Path
) -> None:
    env = process_env(settings, OUTPOST_DATA_DIR=str(tmp_path / "data"))
    async with started(tmp_path, "dev", env=env) as dev:
        with trio.fail_after(120):
            done = await trio.run_process(
                [sys.executable, "-m", "tests.browser_play", dev.url, str(ARTIFACTS)],
                capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    seen = orjson.loads(done.stdout)
    assert seen["after"] > seen["before"] + 20, seen
    assert seen["hud"]["zone"] == "z1" and seen["hud"]["protocol"] == "v2", seen
    assert int(seen["hud"]["players"]) >= 2, seen
    assert "already have a character with that name" in seen["problem"], seen
    assert (ARTIFACTS / "browser-watcher.png").stat().st_size > 10_000


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
