"""The operator console at /console in Debian's chromium, beside the pages of the players
it acts on (tests/test_browser.py runs this in a process of its own, as it does
tests/browser_play.py). Prints what each page showed as JSON, its last line.

    python -m tests.browser_console http://127.0.0.1:8000 /path/to/screenshots

Its environment names the server's DATABASE_URL: an operator is made as an operator
makes one (`outpost operator grant`), and a character is stranded by putting its row in
a zone no process runs, as a zone that stopped for good leaves it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from tests.browser_play import WAIT_MS, new_page, run_with, sign_up_and_play

PASSWORD = "correct horse"


def grant(username: str) -> None:
    subprocess.run([sys.executable, "-m", "server.cli", "operator", "grant", username],
                   check=True, capture_output=True)


def strand(character_id: str) -> None:
    """Put the character in zone z9, which no process runs."""

    async def move() -> None:
        conn = await asyncpg.connect(os.environ["DATABASE_URL"])
        try:
            await conn.execute("UPDATE characters.characters SET zone_id = 'z9' WHERE id = $1",
                               uuid.UUID(character_id))
        finally:
            await conn.close()

    # In a thread of its own: Playwright's sync API keeps an asyncio loop on this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, move()).result()


def said(page: Any, words: str) -> str:
    """The game page's error that holds `words`, once it shows."""
    page.wait_for_function("(words) => window.outpostState.errors.some(e => e.includes(words))",
                           arg=words, timeout=WAIT_MS)
    found: list[str] = page.evaluate("() => window.outpostState.errors")
    return next(error for error in found if words in error)


def console_problem(desk: Any) -> str:
    desk.locator("#problem").wait_for(state="visible", timeout=WAIT_MS)
    text: str = desk.inner_text("#problem-text")
    return text


def log_in(page: Any, username: str) -> None:
    form = page.locator("#login")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(PASSWORD)
    form.locator("button").click()


def console(browser: Any, url: str, artifacts: Path) -> dict[str, Any]:
    pages = [new_page(browser) for _ in range(3)]
    (kicked, _), (lost, _), (desk, _) = pages
    seen: dict[str, Any] = {}
    boss = f"op_{uuid.uuid4().hex[:10]}"
    registered = desk.request.post(f"{url}/v1/auth/register", data={
        "username": boss, "email": f"{boss}@example.com", "password": PASSWORD})
    assert registered.status == 201, registered.text()
    grant(boss)
    player = sign_up_and_play(kicked, url, "Kickme")

    # A player who is no operator is turned away, told how one becomes one.
    desk.goto(f"{url}/console")
    log_in(desk, player["username"])
    seen["not_operator"] = console_problem(desk)
    seen["desk_hidden"] = desk.locator("#desk").is_hidden()
    desk.locator("#dismiss").click()

    log_in(desk, boss)
    desk.locator("#desk").wait_for(state="visible", timeout=WAIT_MS)
    z1 = desk.locator("#zones tr[data-zone=z1]")
    z1.locator("button", has_text="Players").click(timeout=WAIT_MS)
    row = desk.locator("#players tr", has_text="Kickme")
    row.wait_for(timeout=WAIT_MS)
    seen["zone_row"] = z1.inner_text()
    seen["player_row"] = row.inner_text()
    desk.screenshot(path=str(artifacts / "console-zone.png"), full_page=True)
    row.locator("button", has_text="Kick").click()
    seen["kicked"] = said(kicked, "operator")
    kicked.bring_to_front()
    kicked.screenshot(path=str(artifacts / "console-kicked-player.png"))
    seen["kicked_link"] = kicked.evaluate("() => window.outpostState.connection")

    # A character stranded in a zone that no longer runs, rescued.
    stranded = sign_up_and_play(lost, url, "Lost")
    lost.locator("#leave").click()
    strand(stranded["id"])
    play_lost = lost.locator("#character-list li", has_text="Lost").locator("button")
    play_lost.click(timeout=WAIT_MS)
    seen["stranded"] = said(lost, "zone_unavailable")
    desk.bring_to_front()
    desk.locator("#lookup input[name=who]").fill(stranded["username"])
    desk.locator("#lookup button").click()
    character = desk.locator("#characters tr", has_text="Lost")
    character.locator(".stranded").wait_for(timeout=WAIT_MS)
    seen["account"] = desk.inner_text("#account")
    desk.screenshot(path=str(artifacts / "console-account.png"), full_page=True)
    character.locator("select").select_option("z1")
    character.locator("button", has_text="Move").click()
    character.locator(".stranded").wait_for(state="detached", timeout=WAIT_MS)
    lost.bring_to_front()
    play_lost.click(timeout=WAIT_MS)  # its owner joins it again: in z1 now
    lost.wait_for_function("() => document.getElementById('hud-zone').textContent === 'z1'"
                           " && window.outpostState.connection === 'open'", timeout=WAIT_MS)
    seen["rescued_zone"] = lost.inner_text("#hud-zone")

    # Disabled: its open page is closed, and its next login refused.
    desk.bring_to_front()
    desk.locator("#disable", has_text="Disable").click()
    desk.locator("#account-state", has_text="disabled").wait_for(timeout=WAIT_MS)
    seen["disabled"] = said(lost, "disabled")
    lost.bring_to_front()
    lost.screenshot(path=str(artifacts / "console-disabled-player.png"))
    lost.locator("#login").wait_for(state="visible", timeout=WAIT_MS)  # logged out
    log_in(lost, stranded["username"])
    lost.wait_for_function("() => window.outpostState.errors.filter(e => "
                           "e.includes('disabled')).length >= 2", timeout=WAIT_MS)
    seen["login_refused"] = lost.evaluate("() => window.outpostState.errors")
    seen["done"] = desk.inner_text("#done")
    desk.bring_to_front()
    desk.screenshot(path=str(artifacts / "console-done.png"), full_page=True)
    seen["script_errors"] = [error for _, failed in pages for error in failed]
    return seen


if __name__ == "__main__":
    found = run_with(console, "console", sys.argv[1], Path(sys.argv[2]))
    print(orjson.dumps(found).decode())
