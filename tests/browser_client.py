"""outpost-client.js on its own, in Debian's chromium (tests/test_browser.py runs this in a
process of its own, as it does tests/browser_play.py): the module is imported by a page
of the server that serves it, and given a WebSocket of the test's making, so that the
test says exactly what the server sends. Prints what the client did as JSON.

    python -m tests.browser_client http://127.0.0.1:8000
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from tests.browser_play import CHROMIUM, CHROMIUM_ARGS

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


def check(url: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            found: dict[str, Any] = page.evaluate(RESYNC)
            return found
        finally:
            browser.close()


if __name__ == "__main__":
    print(orjson.dumps(check(sys.argv[1])).decode())
