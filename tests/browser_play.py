"""Two players in Debian's chromium, driven by Playwright (tests/test_browser.py runs
this in a process of its own: Playwright's sync API wants an asyncio loop, and a
test process has trio-asyncio's). Prints what it saw as JSON.

    python -m tests.browser_play http://127.0.0.1:8000 /path/to/screenshots
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium on a closed network, as root, with no screen (see the machine's notes).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WAIT_MS = 15_000


def sign_up_and_play(page: Any, url: str, name: str) -> None:
    """As a player: register, create `name`, and play it."""
    page.goto(url)
    register = page.locator("#register")
    username = f"web_{uuid.uuid4().hex[:10]}"
    register.locator("input[name=username]").fill(username)
    register.locator("input[name=email]").fill(f"{username}@example.com")
    register.locator("input[name=password]").fill("correct horse")
    register.locator("button").click()
    create = page.locator("#create")
    create.wait_for(state="visible", timeout=WAIT_MS)
    create.locator("input[name=name]").fill(name)
    create.locator("button").click()
    page.locator("#character-list li", has_text=name).locator("button").click(timeout=WAIT_MS)
    page.locator("#map").wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_function("() => window.outpostState.own !== null", timeout=WAIT_MS)


def seen_x(page: Any, name: str) -> float | None:
    found: float | None = page.evaluate(
        """(name) => { const seen = window.outpostState.seen;
                       if (!seen) return null;
                       for (const p of seen.values()) if (p.name === name) return p.x;
                       return null; }""", name)
    return found


def play(url: str, artifacts: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            mover, watcher = browser.new_page(), browser.new_page()
            sign_up_and_play(mover, url, "Mover")
            sign_up_and_play(watcher, url, "Watcher")
            watcher.wait_for_function(
                "() => [...(window.outpostState.seen || new Map()).values()]"
                ".some(p => p.name === 'Mover')", timeout=WAIT_MS)
            before = seen_x(watcher, "Mover")
            assert before is not None
            mover.locator("#map").focus()
            mover.keyboard.down("d")
            mover.wait_for_timeout(700)  # held down: the page moves 4 units 20 times a second
            mover.keyboard.up("d")
            watcher.wait_for_function(
                """([name, x]) => [...window.outpostState.seen.values()]
                   .some(p => p.name === name && p.x > x + 20)""",
                arg=["Mover", before], timeout=WAIT_MS)
            after = seen_x(watcher, "Mover")
            hud = {key: watcher.inner_text(f"#hud-{key}")
                   for key in ("zone", "tick", "players", "protocol")}
            for page, name in ((mover, "mover"), (watcher, "watcher")):
                page.bring_to_front()  # a page in the background is not drawn
                page.wait_for_timeout(300)
                page.screenshot(path=str(artifacts / f"browser-{name}.png"))
            # A bad request, as a player makes it: the server's words on the page.
            mover.goto(url)
            create = mover.locator("#create")
            create.wait_for(state="visible", timeout=WAIT_MS)
            create.locator("input[name=name]").fill("Mover")  # taken
            create.locator("button").click()
            mover.locator("#problem").wait_for(state="visible", timeout=WAIT_MS)
            problem = mover.inner_text("#problem")
            return {"before": before, "after": after, "hud": hud, "problem": problem}
        finally:
            browser.close()




if __name__ == "__main__":
    print(orjson.dumps(play(sys.argv[1], Path(sys.argv[2]))).decode())
