"""Players in Debian's chromium, driven by Playwright (tests/test_browser.py runs this in
a process of its own: Playwright's sync API wants an asyncio loop, and a test process
has trio-asyncio's). Each scenario prints what it saw as JSON, its last line.

    python -m tests.browser_play <scenario> http://127.0.0.1:8000 /path/to/screenshots

What is measured is read from the page's `window.outpostState` (docs/client.md): what
the page drew, frame by frame. Every wait is Playwright's, bounded.

The `outage` scenario is driven by the test: it prints `{"step": ...}` lines and waits
for a line on stdin before going on, while the test stops and starts the servers.
"""

from __future__ import annotations

import itertools
import math
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium on a closed network, as root, with no screen (see the machine's notes). The
# two pages of a fight are both on screen at once only as separate windows: without these,
# chromium throttles the animation frames of a page in the background.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-background-timer-throttling",
                 "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"]
WAIT_MS = 15_000
VIEWPORT = {"width": 1000, "height": 900}

# The largest distance a drawn player may move between two animation frames while it
# walks. Walking is 80 units/s (4 units a move, 20 moves a second): a frame of 16.7 ms
# moves 1.3 units. Before this page drew movement smoothly, the own player jumped 4
# units at each move (and the others at each snapshot). A frame that comes later than
# STALL_MS (the machine busy: not the page's doing) may move as far as walking goes in
# its time, and no farther (SPEED, with a margin of a quarter); the tests count them.
JUMP_BOUND = 2.5
STALL_MS = 31.0
SPEED = 80.0


def new_page(browser: Any) -> tuple[Any, list[str]]:
    """A page in a window of its own, and the list its script errors go to."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    failures: list[str] = []
    page.on("pageerror", lambda error: failures.append(str(error)))
    return page, failures


def sign_up_and_play(page: Any, url: str, name: str | None = None) -> dict[str, Any]:
    """As a player: register, and play the character provisioning made, or one made
    named `name`; the own player."""
    page.goto(url)
    register = page.locator("#register")
    username = f"web_{uuid.uuid4().hex[:10]}"
    register.locator("input[name=username]").fill(username)
    register.locator("input[name=email]").fill(f"{username}@example.com")
    register.locator("input[name=password]").fill("correct horse")
    register.locator("button").click()
    # The provisioned character comes a moment after the 201: the page waits for it.
    listed = page.locator("#character-list li button").first
    listed.wait_for(state="visible", timeout=WAIT_MS)
    if name is None:
        listed.click()
    else:
        create = page.locator("#create")
        create.locator("input[name=name]").fill(name)
        create.locator("button").click()
        page.locator("#character-list li", has_text=name).locator("button").click(
            timeout=WAIT_MS)
    page.locator("#map").wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_function("() => window.outpostState.own !== null && "
                           "window.outpostState.view !== undefined", timeout=WAIT_MS)
    own: dict[str, Any] = page.evaluate("() => ({ ...window.outpostState.own, "
                                        "id: window.outpostState.me })")
    return {**own, "username": username}


def wait_to_see(page: Any, name: str) -> None:
    page.wait_for_function(
        "(name) => [...window.outpostState.seen.values()].some(p => p.name === name)",
        arg=name, timeout=WAIT_MS)


def drawn(page: Any, character_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = page.evaluate(
        "(id) => { const p = window.outpostState.seen.get(id); return p ? { ...p } : null; }",
        character_id)
    return found


def hold(page: Any, key: str, ms: int) -> None:
    page.locator("#map").focus()
    page.keyboard.down(key)
    page.wait_for_timeout(ms)  # held down: the page moves 4 units 20 times a second
    page.keyboard.up(key)


def screen_of(page: Any, x: float, y: float) -> tuple[float, float]:
    """Where world point (x, y) is drawn on the page (CSS pixels), by the page's view."""
    at: list[float] = page.evaluate(
        """([x, y]) => { const v = window.outpostState.view;
                         const box = document.getElementById("map").getBoundingClientRect();
                         const kx = box.width / v.width, ky = box.height / v.height;
                         return [box.left + (v.width / 2 + (x - v.cx) * v.scale) * kx,
                                 box.top + (v.height / 2 + (y - v.cy) * v.scale) * ky]; }""",
        [x, y])
    return at[0], at[1]


def settled(page: Any) -> None:
    """Until the own player is drawn where the server has it (no correction left)."""
    page.wait_for_function(
        """() => { const s = window.outpostState;
                   return s.pending.length === 0
                          && Math.hypot(s.correction.x, s.correction.y) < 0.01; }""",
        timeout=WAIT_MS)


def record_others(page: Any, character_id: str) -> None:
    """Start recording, every animation frame, where `character_id` is drawn."""
    page.evaluate(
        """(id) => { const s = window.outpostState; s.watched = [];
                     const each = (t) => { const p = s.seen.get(id);
                       if (!s.watched) return;
                       if (p) s.watched.push({ t, x: p.x, y: p.y });
                       requestAnimationFrame(each); };
                     requestAnimationFrame(each); }""", character_id)


def fight(browser: Any, url: str, artifacts: Path) -> dict[str, Any]:
    """Two players: the victim walks away and the shooter sees it glide; the shooter aims
    at where it is drawn and clicks until it dies; both kill feeds say so; it respawns."""
    (shooter, shooter_errors), (victim, victim_errors) = new_page(browser), new_page(browser)
    me = sign_up_and_play(shooter, url, "Shooter")
    them = sign_up_and_play(victim, url, "Victim")
    wait_to_see(shooter, them["name"])
    wait_to_see(victim, me["name"])
    before = drawn(shooter, them["id"])
    assert before is not None
    record_others(shooter, them["id"])
    hold(victim, "d", 1200)
    shooter.wait_for_function(
        """([id, x]) => { const p = window.outpostState.seen.get(id);
                          return p && p.x > x + 60; }""",
        arg=[them["id"], before["x"]], timeout=WAIT_MS)
    settled(victim)
    # Still, until the shooter draws it where the server has it (interpolation's 100 ms).
    target = victim.evaluate(
        "() => { const s = window.outpostState; return { ...s.client.players.get(s.me) }; }")
    shooter.wait_for_function(
        """([id, x, y]) => { const p = window.outpostState.seen.get(id);
                             return p && Math.hypot(p.x - x, p.y - y) < 0.001; }""",
        arg=[them["id"], target["x"], target["y"]], timeout=WAIT_MS)
    watched = shooter.evaluate(
        """() => { const s = window.outpostState, w = s.watched;
                   s.watched = null;
                   return w; }""")
    hud = {key: shooter.inner_text(f"#hud-{key}")
           for key in ("zone", "tick", "players", "range", "protocol", "link")}

    shots = 0
    mid_fight = False
    while shots < 16:
        if victim.evaluate("() => window.outpostState.dead !== null"):
            break
        p = drawn(shooter, them["id"])
        assert p is not None, "the victim went out of view"
        sx, sy = screen_of(shooter, p["x"], p["y"])
        shooter.mouse.click(sx, sy)
        shots += 1
        if not mid_fight and victim.evaluate("() => window.outpostState.hp < 100"):
            mid_fight = True
            shooter.wait_for_timeout(150)  # the hit marker is drawn for 700 ms
            shoot(shooter, victim, artifacts, "fight-mid")
        shooter.wait_for_timeout(520)  # the pistol fires twice a second
    victim.wait_for_function("() => window.outpostState.dead !== null", timeout=WAIT_MS)
    feed_has = """(name) => window.outpostState.killFeed.some(k => k.victimName === name)"""
    shooter.wait_for_function(feed_has, arg=them["name"], timeout=WAIT_MS)
    victim.wait_for_function(feed_has, arg=them["name"], timeout=WAIT_MS)
    victim.wait_for_selector("#overlay:not([hidden])", timeout=WAIT_MS)
    overlay = victim.inner_text("#overlay-text")
    shoot(shooter, victim, artifacts, "fight-killed")
    feeds = {"shooter": shooter.inner_text("#killfeed"),
             "victim": victim.inner_text("#killfeed")}
    # Respawned (WORLD_RESPAWN_S, 3 s by default): alive, whole, the overlay gone.
    victim.wait_for_function(
        "() => window.outpostState.dead === null && window.outpostState.hp === 100",
        timeout=WAIT_MS)
    victim.wait_for_selector("#overlay", state="hidden", timeout=WAIT_MS)
    respawned = victim.evaluate("() => ({ ...window.outpostState.own })")
    shooter.wait_for_function(
        "(id) => { const p = window.outpostState.seen.get(id); return p && p.hp === 100; }",
        arg=them["id"], timeout=WAIT_MS)
    return {"me": me, "them": them, "before": before, "watched": watched,
            "watched_jumps": jumps(watched), "hud": hud, "shots": shots,
            "mid_fight": mid_fight, "overlay": overlay, "feeds": feeds,
            "kill_feed": shooter.evaluate("() => window.outpostState.killFeed"),
            "respawned": respawned,
            "script_errors": shooter_errors + victim_errors}


def shoot(a: Any, b: Any, artifacts: Path, name: str) -> None:
    artifacts.mkdir(exist_ok=True)
    for page, who in ((a, "shooter"), (b, "victim")):
        page.screenshot(path=str(artifacts / f"{name}-{who}.png"))


def jumps(frames: list[dict[str, float]]) -> dict[str, Any]:
    """Between each two frames: too far is over JUMP_BOUND in a frame on time, or over
    what walking covers (plus a quarter) in a late one."""
    on_time: list[float] = []
    late: list[float] = []
    too_far: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(frames):
        gap = b["t"] - a["t"]
        moved = math.hypot(b["x"] - a["x"], b["y"] - a["y"])
        (on_time if gap <= STALL_MS else late).append(moved)
        if moved > (JUMP_BOUND if gap <= STALL_MS else SPEED * gap / 1000 * 1.25):
            too_far.append({"gap_ms": gap, "moved": moved, "at": b})
    return {"frames": len(frames), "largest": max(on_time, default=0.0),
            "late_frames": len(late), "too_far": too_far, "bound": JUMP_BOUND}


def smooth(browser: Any, url: str, artifacts: Path) -> dict[str, Any]:
    """Own movement: every frame's drawn own position, recorded by the page while keys are
    held (right, then down and right, then up)."""
    page, errors = new_page(browser)
    own = sign_up_and_play(page, url)
    page.locator("#map").focus()
    page.evaluate("() => { const s = window.outpostState; s.frames = []; s.recording = true; }")
    page.keyboard.down("d")
    page.wait_for_timeout(1000)
    page.keyboard.down("s")
    page.wait_for_timeout(700)
    page.keyboard.up("d")
    page.keyboard.up("s")
    page.keyboard.down("w")
    page.wait_for_timeout(700)
    page.keyboard.up("w")
    settled(page)
    frames = page.evaluate(
        "() => { const s = window.outpostState; s.recording = false; return s.frames; }")
    page.screenshot(path=str(artifacts / "smooth.png"))
    end = page.evaluate("() => ({ ...window.outpostState.own })")
    half_view = page.evaluate("() => window.outpostState.halfView")
    return {"start": own, "end": end, "jumps": jumps(frames), "half_view": half_view,
            "script_errors": errors}


def errors(browser: Any, url: str, artifacts: Path) -> dict[str, Any]:
    """An error stays on screen through the page's refreshes until dismissed (its button)."""
    page, script_errors = new_page(browser)
    sign_up_and_play(page, url)
    # A fire with a weapon the game does not have, as a modified client sends it:
    # the edge refuses it (validation_failed, no seq: an error, not a refusal).
    page.evaluate("""() => window.outpostState.client.send("fire",
                      { weapon: "laser", ax: 1, ay: 0, tick: 0 })""")
    problems = page.locator("#problems li")
    problems.first.wait_for(state="visible", timeout=WAIT_MS)
    text = problems.first.inner_text()
    refreshed = page.evaluate("() => window.outpostState.zoneRefreshes")
    # Two refreshes of the zone list later (every 3 s; it used to wipe every error):
    page.wait_for_function("(n) => window.outpostState.zoneRefreshes >= n + 2",
                           arg=refreshed, timeout=WAIT_MS)
    still = page.evaluate("() => window.outpostState.errors")
    page.screenshot(path=str(artifacts / "errors.png"))
    page.locator("#problems li .dismiss").first.click()
    page.wait_for_function("() => window.outpostState.errors.length === 0",
                           timeout=WAIT_MS)
    after = problems.count()
    # The character page's own errors: a name taken, resolved by a create that works.
    page.locator("#leave").click()
    create = page.locator("#create")
    create.wait_for(state="visible", timeout=WAIT_MS)
    taken = page.inner_text("#character-list li").split(" (")[0]
    create.locator("input[name=name]").fill(taken)
    create.locator("button").click()
    problems.first.wait_for(state="visible", timeout=WAIT_MS)
    name_taken = problems.first.inner_text()
    create.locator("input[name=name]").fill(f"Other{uuid.uuid4().hex[:6]}")
    create.locator("button").click()
    page.wait_for_function("() => window.outpostState.errors.length === 0",
                           timeout=WAIT_MS)
    socket_closed = page.evaluate("() => window.outpostState.client === null")
    page.locator("#logout").click()
    page.locator("#register").wait_for(state="visible", timeout=WAIT_MS)
    token = page.evaluate(
        "() => [window.outpostState.session.saved, sessionStorage.getItem('session')]")
    return {"text": text, "still": still, "after": after, "name_taken": name_taken,
            "socket_closed": socket_closed, "token": token,
            "script_errors": script_errors}


def outage(browser: Any, url: str, artifacts: Path) -> dict[str, Any]:
    """A player through a zone's restart, then the api's: the test stops and starts them
    when told (a `{"step": ...}` line) and answers on stdin once done."""
    def step(name: str) -> None:
        print(orjson.dumps({"step": name}).decode(), flush=True)
        assert sys.stdin.readline().strip() == "ok", f"the test did not do {name}"

    def tick() -> int:
        found: int = page.evaluate("() => window.outpostState.client.tick")
        return found

    seen: dict[str, Any] = {}
    page, script_errors = new_page(browser)
    own = sign_up_and_play(page, url)
    step("stop-zone")
    page.wait_for_function(
        "() => window.outpostState.errors.some(e => e.includes('zone_unavailable'))",
        timeout=WAIT_MS)
    page.locator("#banner").wait_for(state="visible", timeout=WAIT_MS)
    seen["zone_down"] = {"banner": page.inner_text("#banner"),
                         "errors": page.evaluate("() => window.outpostState.errors")}
    page.screenshot(path=str(artifacts / "outage-zone-down.png"))
    step("start-zone")
    page.locator("#banner").wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("() => window.outpostState.errors.length === 0",
                           timeout=WAIT_MS)
    back_at = tick()
    page.wait_for_function("(t) => window.outpostState.client.tick > t + 10",
                           arg=back_at, timeout=WAIT_MS)
    seen["zone_back"] = {"link": page.evaluate("() => window.outpostState.connection")}

    step("stop-api")
    page.wait_for_function("() => window.outpostState.connection === 'reconnecting'",
                           timeout=WAIT_MS)
    page.locator("#banner").wait_for(state="visible", timeout=WAIT_MS)
    seen["api_down"] = {"banner": page.inner_text("#banner")}
    page.screenshot(path=str(artifacts / "outage-api-down.png"))
    step("start-api")
    page.wait_for_function("() => window.outpostState.connection === 'open'",
                           timeout=30_000)
    page.locator("#banner").wait_for(state="hidden", timeout=WAIT_MS)
    back_at = tick()
    page.wait_for_function("(t) => window.outpostState.client.tick > t + 10",
                           arg=back_at, timeout=WAIT_MS)
    hold(page, "d", 500)  # and it plays: the move is acknowledged
    settled(page)
    seen["api_back"] = {"own": page.evaluate("() => ({ ...window.outpostState.own })"),
                        "me": page.evaluate("() => window.outpostState.me"),
                        "errors": page.evaluate("() => window.outpostState.errors")}
    page.screenshot(path=str(artifacts / "outage-back.png"))
    return {"own": own, **seen, "script_errors": script_errors}


SCENARIOS = {"fight": fight, "smooth": smooth, "errors": errors, "outage": outage}

def run(scenario: str, url: str, artifacts: Path) -> dict[str, Any]:
    return run_with(SCENARIOS[scenario], scenario, url, artifacts)


def run_with(play: Callable[[Any, str, Path], dict[str, Any]], scenario: str, url: str,
             artifacts: Path) -> dict[str, Any]:
    """`play` in a fresh chromium; if it fails, a screenshot of every page
    (failed-<scenario>-<n>.png) and what each page showed, on stderr."""
    from playwright.sync_api import sync_playwright

    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            found = play(browser, url, artifacts)
            return found
        except BaseException:
            pages = [page for context in browser.contexts for page in context.pages]
            for n, page in enumerate(pages):
                page.screenshot(path=str(artifacts / f"failed-{scenario}-{n}.png"))
                shown = page.evaluate("""() => ({ errors: window.outpostState?.errors,
                    banner: window.outpostState?.banner, link: window.outpostState?.connection,
                    text: document.body.innerText.slice(0, 600) })""")
                print(f"page {n}:", orjson.dumps(shown).decode(), file=sys.stderr)
            raise
        finally:
            browser.close()


if __name__ == "__main__":
    print(orjson.dumps(run(sys.argv[1], sys.argv[2], Path(sys.argv[3]))).decode())
