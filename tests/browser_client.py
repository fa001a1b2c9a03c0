"""outpost-client.js on its own, in Debian's chromium (tests/test_browser.py runs this in a
process of its own, as it does tests/browser_play.py): the module is imported by a page
of the server that serves it, and given a WebSocket of the test's making, so that the
test says exactly what the server sends; or, in `reconnect`, the browser's own WebSocket
to a server the test stops and starts again. Prints what the client did as JSON.

    python -m tests.browser_client [resync|closes|reconnect] http://127.0.0.1:8000

`reconnect` is driven by the test: it prints `{"step": ...}` lines and waits for a line
on stdin (the test stopped or started the api) before going on.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from tests.browser_play import CHROMIUM, CHROMIUM_ARGS, WAIT_MS

# A socket that opens at once, records what the client sends (decoded), and delivers
# what the test pushes as binary frames (v2).
RESYNC = """async () => {
  const { OutpostClient } = await import("/static/outpost-client.js");
  const { encode, decode } = await import("/static/msgpack.js");
  const sent = [];
  class Socket extends EventTarget {
    constructor() {
      super();
      this.protocol = "outpost.v2";
      this.readyState = 1;
      Socket.last = this;
      setTimeout(() => this.dispatchEvent(new Event("open")));
    }
    send(data) { sent.push(decode(data)); }
    close() {}
    push(bytes) { this.dispatchEvent(new MessageEvent("message", { data: bytes })); }
    snapshot(tick, base, enter, update) {
      this.push(encode({ type: "snapshot", zone: "z1", tick, base, enter, update, leave: [] })
        .slice().buffer);
    }
  }
  const client = new OutpostClient({ baseUrl: location.origin, token: "t",
                                     WebSocketImpl: Socket });
  const resyncs = [];
  client.addEventListener("resync", (e) => resyncs.push(e.detail.reason));
  await client.connect();
  const socket = Socket.last;
  const x = () => client.players.get("a").x;
  const seen = {};
  socket.snapshot(5, null, [[0, "a", "Ada"]], [[0, 1.0, 2.0, 3]]);
  socket.snapshot(6, 5, [], [[0, 1.5, 2.0, 4]]);
  seen.followed = x();
  socket.snapshot(8, 7, [], [[0, 9.0, 9.0, 5]]);  // against a tick the view does not hold
  socket.snapshot(9, 8, [], [[0, 9.5, 9.0, 6]]);  // dropped: a complete one is awaited
  seen.waiting = x();
  socket.snapshot(10, null, [[0, "a", "Ada"]], [[0, 10.0, 9.0, 7]]);
  seen.resynced = x();
  socket.snapshot(11, 10, [], [[7, 1.0, 1.0, 1]]);  // an eid nobody entered
  socket.push(new Uint8Array([0x87, 0xa4]).buffer);  // cut short: does not decode
  socket.snapshot(12, null, [[0, "a", "Ada"]], [[0, 12.0, 9.0, 8]]);
  seen.last = x();
  return { sent, resyncs, seen };
}"""


# A socket the test scripts: each one made takes the next of Socket.plan ("open", or
# "refuse": closed with 1006 before it opens, as a browser reports any refused upgrade);
# drop(code) closes it as the server would. Timers are the page's own, with delays of
# milliseconds: the client's options make its backoff that short.
CLOSES = """async () => {
  const { OutpostClient } = await import("/static/outpost-client.js");
  const { encode, decode } = await import("/static/msgpack.js");
  const tick = (ms = 0) => new Promise((done) => setTimeout(done, ms));
  class Socket extends EventTarget {
    constructor() {
      super();
      this.protocol = "outpost.v2";
      this.readyState = 0;
      this.sent = [];
      Socket.made.push(this);
      const plan = Socket.plan.shift() || "open";
      setTimeout(() => {
        if (plan === "refuse") this.drop(1006);
        else { this.readyState = 1; this.dispatchEvent(new Event("open")); }
      });
    }
    send(data) { this.sent.push(decode(data)); }
    close(code = 1000, reason = "") { setTimeout(() => this.drop(code, reason)); }
    drop(code, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.dispatchEvent(new CloseEvent("close", { code, reason }));
    }
    push(message) {
      const data = encode(message).slice().buffer;
      this.dispatchEvent(new MessageEvent("message", { data }));
    }
  }
  const welcome = { type: "welcome", zone: "z1", tick: 1, tick_rate: 20, eid: 0, fields: ["hp"],
                    character: { id: "c1", name: "Ada", x: 0, y: 0 } };
  async function session({ plan = [], probe = "unreachable", ...options } = {}) {
    Socket.made = [];
    Socket.plan = plan;
    const seen = { events: [] };
    const fetchImpl = async () => {
      if (probe === "unreachable") throw new TypeError("Failed to fetch");
      return { status: probe };
    };
    const client = new OutpostClient({ baseUrl: location.origin, token: "t", WebSocketImpl: Socket,
                                       fetchImpl, ...options });
    for (const type of ["reconnecting", "reconnected", "close", "welcome", "error"]) {
      client.addEventListener(type, (e) => seen.events.push({ type, ...e.detail }));
    }
    seen.connected = await client.connect().then((p) => p, (e) => `rejected: ${e.message}`);
    return { client, seen };
  }
  const out = {};
  // Final closes: never tried again.
  for (const code of [1000, 4001, 4008, 4009, 4010, 4011]) {
    const { client, seen } = await session({ baseDelayMs: 5 });
    client.join("c1");
    Socket.made[0].drop(code);
    await tick(100);
    out[code] = { sockets: Socket.made.length, events: seen.events };
  }
  // Lost (1006), going away (1001): a new socket, the same character joined again.
  for (const code of [1006, 1001]) {
    const { client, seen } = await session({ baseDelayMs: 5 });
    client.join("c1");
    Socket.made[0].push(welcome);
    Socket.made[0].drop(code);
    while (Socket.made.length < 2 || Socket.made[1].readyState !== 1) await tick(5);
    Socket.made[1].push(welcome);
    await tick(10);
    out[code] = { sockets: Socket.made.length, sent: Socket.made[1].sent, events: seen.events };
  }
  // An unreachable server: backoff doubling from 10 ms to at most 80, full jitter (the
  // draw here is always 0.999: the ceilings), then giving up after maxAttempts.
  {
    const { seen } = await session({ plan: Array(9).fill("refuse"), baseDelayMs: 10,
                                     maxDelayMs: 80, maxAttempts: 5, random: () => 0.999 });
    out.unreachable = { sockets: Socket.made.length, connected: seen.connected,
                        events: seen.events };
  }
  // An upgrade refused, and the server there says the token is refused: log in again.
  {
    const { seen } = await session({ plan: ["refuse"], probe: 401 });
    out.refused = { sockets: Socket.made.length, connected: seen.connected, events: seen.events };
  }
  // Unreachable at first, then there: connect() resolves once it opens.
  {
    const { seen } = await session({ plan: ["refuse", "refuse"], baseDelayMs: 5 });
    out.late = { sockets: Socket.made.length, connected: seen.connected, events: seen.events };
  }
  // zone_unavailable that persists past unavailableMs: a new socket and join.
  {
    const { client, seen } = await session({ baseDelayMs: 5, unavailableMs: 50 });
    client.join("c1");
    Socket.made[0].push(welcome);
    Socket.made[0].push({ type: "error", code: "zone_unavailable", message: "your zone stopped" });
    while (Socket.made.length < 2 || Socket.made[1].readyState !== 1) await tick(5);
    Socket.made[1].push(welcome);
    await tick(10);
    out.zone = { sockets: Socket.made.length, sent: Socket.made[1].sent, events: seen.events };
    client.close();
  }
  // Fields and events: hp from a v2 entry after seq; the events message as an event.
  {
    const { client, seen } = await session();
    const events = [];
    client.addEventListener("events", (e) => events.push(e.detail));
    client.join("c1");
    const socket = Socket.made[0];
    socket.push(welcome);
    socket.push({ type: "snapshot", zone: "z1", tick: 2, base: null, enter: [[0, "c1", "Ada"]],
                  update: [[0, 1.5, 2.0, 0, 100]], leave: [] });
    socket.push({ type: "events", zone: "z1", tick: 3,
                  events: [{ kind: "hit", shooter: "c2", victim: "c1", weapon: "pistol",
                             damage: 25, hp: 75 }] });
    socket.push({ type: "snapshot", zone: "z1", tick: 3, base: 2, enter: [],
                  update: [[0, 1.5, 2.0, 0, 75]], leave: [] });
    const seq = client.fire("pistol", 1, 0, 2);
    const moved = client.send("move", { dx: 1, dy: 0 });
    out.game = { player: { ...client.players.get("c1") }, events, sent: socket.sent, seq, moved };
    client.close();
  }
  return out;
}"""

# A real server that goes away and comes back: the client reconnects, joins the same
# character again and gets its snapshots again.
RECONNECT_START = """async () => {
  const { OutpostClient, api } = await import("/static/outpost-client.js");
  const name = "web_" + Math.random().toString(16).slice(2, 12);
  const { token } = await api(location.origin, "/v1/auth/register", { method: "POST",
      body: { username: name, email: `${name}@example.com`, password: "correct horse" } });
  let characters = [];
  for (let tries = 0; !characters.length && tries < 100; tries += 1) {
    ({ characters } = await api(location.origin, "/v1/characters", { token }));
    if (!characters.length) await new Promise((done) => setTimeout(done, 100));
  }
  const client = new OutpostClient({ baseUrl: location.origin, token, maxDelayMs: 2000 });
  const log = [];
  for (const type of ["welcome", "reconnecting", "reconnected", "close", "error"]) {
    client.addEventListener(type, (e) => log.push({ type, ...e.detail,
                                                    character: e.detail.character?.id }));
  }
  client.addEventListener("snapshot", (e) => {
    if (e.detail.players.has(client.characterId)) window.snapshots += 1;
  });
  window.snapshots = 0;
  window.client = client;
  window.log = log;
  await client.connect();
  client.join(characters[0].id);
  return characters[0].id;
}"""


def resync(page: Any) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(RESYNC)
    return found


def closes(page: Any) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(CLOSES)
    return found


def reconnect(page: Any) -> dict[str, Any]:
    def step(name: str) -> None:
        print(orjson.dumps({"step": name}).decode(), flush=True)
        assert sys.stdin.readline().strip() == "ok", f"the test did not do {name}"

    character = page.evaluate(RECONNECT_START)
    page.wait_for_function("() => window.snapshots > 5", timeout=WAIT_MS)
    step("stop-api")
    page.wait_for_function("() => window.client.status === 'reconnecting'", timeout=WAIT_MS)
    page.wait_for_function("() => window.log.filter(e => e.type === 'reconnecting').length >= 2",
                           timeout=WAIT_MS)
    step("start-api")
    page.wait_for_function("() => window.log.some(e => e.type === 'reconnected')",
                           timeout=30_000)
    before = page.evaluate("() => window.snapshots")
    page.wait_for_function("(n) => window.snapshots > n + 5", arg=before, timeout=WAIT_MS)
    return {"character": character, "log": page.evaluate("() => window.log"),
            "status": page.evaluate("() => window.client.status")}


SCENARIOS = {"resync": resync, "closes": closes, "reconnect": reconnect}


def check(scenario: str, url: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            return SCENARIOS[scenario](page)
        finally:
            browser.close()


if __name__ == "__main__":
    print(orjson.dumps(check(sys.argv[1], sys.argv[2])).decode())
