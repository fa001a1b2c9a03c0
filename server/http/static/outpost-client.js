// outpost-client.js: the world of an Outpost server, for game clients in a browser
// (docs/client.md; the wire is docs/protocol.md). No dependencies but msgpack.js.
//
//   const client = new OutpostClient({ baseUrl: location.origin, token });
//   client.addEventListener("welcome", (e) => ...);   // e.detail: the welcome
//   client.addEventListener("snapshot", (e) => ...);  // e.detail: { zone, tick, players }
//   client.addEventListener("error", (e) => ...);     // e.detail: { code, message }
//   client.addEventListener("close", (e) => ...);     // e.detail: { code, reason, words }
//   client.addEventListener("resync", (e) => ...);    // e.detail: { reason } (v2, rare)
//   await client.connect();                           // offers v2, takes v1 otherwise
//   client.join(characterId);
//   client.move(dx, dy);                               // returns the seq it sent
//   client.travel("z2");
//
// `players` in a snapshot is a Map of character id -> { id, eid, name, x, y, seq },
// the same whichever protocol the server chose: v2 deltas are applied here.

import { decode, encode } from "./msgpack.js";

export const SUBPROTOCOL = "outpost.v2";

// What a close code means, in words a player can read (docs/protocol.md).
export const CLOSE_WORDS = {
  1000: "The connection was closed.",
  1001: "The server is going away (a restart?). Reconnect in a moment.",
  1006: "The connection was lost.",
  1007: "The server could not read a compressed message.",
  4001: "Your session has expired: log in again.",
  4008: "The server closed the connection: too many or too large messages, or no activity.",
  4009: "This character was taken over by another session.",
};

export class OutpostClient extends EventTarget {
  constructor({ baseUrl, token, protocol = "auto", WebSocketImpl = WebSocket }) {
    super();
    this.baseUrl = baseUrl;
    this.token = token;
    this.wanted = protocol;  // "auto" (v2 if offered), "v2" or "v1"
    this.WebSocketImpl = WebSocketImpl;
    this.protocol = null;  // "v1" or "v2" once connected
    this.seq = 0;
    this.eid = null;
    this.zone = null;
    this.players = new Map();  // character id -> player (what the last snapshot showed)
    this._byEid = new Map();  // v2: eid -> player
    this._tick = null;  // v2: the tick of the last snapshot applied
    this._resyncing = false;  // v2: a complete snapshot was asked for; deltas wait for it
    this._pings = new Map();
    this.rttMs = null;
  }

  connect() {
    const url = new URL("/v1/world/ws", this.baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    const offered = this.wanted === "v1" ? [] : [SUBPROTOCOL];
    const socket = new this.WebSocketImpl(url.toString(), offered);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    return new Promise((resolve, reject) => {
      socket.addEventListener("open", () => {
        this.protocol = socket.protocol === SUBPROTOCOL ? "v2" : "v1";
        resolve(this.protocol);
      });
      socket.addEventListener("message", (event) => this._received(event.data));
      socket.addEventListener("close", (event) => {
        const words = CLOSE_WORDS[event.code] || `The connection closed (${event.code}).`;
        this._emit("close", { code: event.code, reason: event.reason, words });
        reject(new Error(words));
      });
    });
  }

  join(characterId) {
    this._send({ type: "join", character_id: characterId });
  }

  move(dx, dy) {
    this.seq += 1;
    this._send({ type: "move", dx, dy, seq: this.seq });
    return this.seq;
  }

  travel(zone) {
    this._send({ type: "travel", zone });
  }

  ping() {
    const t = Math.round(performance.now() * 1000);
    this._pings.set(t, performance.now());
    this._send({ type: "ping", t });
  }

  close() {
    if (this.socket) this.socket.close(1000, "bye");
  }

  _send(message) {
    if (!this.socket || this.socket.readyState !== 1) return;
    this.socket.send(this.protocol === "v2" ? encode(message) : JSON.stringify(message));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _received(data) {
    let message;
    try {
      message = typeof data === "string" ? JSON.parse(data) : decode(data);
    } catch (error) {
      // Bytes that do not decode (docs/protocol.md: never sent on purpose). Whatever it
      // was, a complete snapshot puts the view right.
      this._resync(`a message that does not decode: ${error.message}`);
      return;
    }
    switch (message.type) {
      case "welcome":
        this.zone = message.zone;
        this.eid = message.eid ?? null;
        this._emit("welcome", message);
        break;
      case "snapshot":
        if (this.protocol === "v2") this._applyDelta(message);
        else this._applyFull(message);
        this._emit("snapshot", { zone: message.zone, tick: message.tick, players: this.players });
        break;
      case "pong": {
        const sent = this._pings.get(message.t);
        if (sent !== undefined) {
          this._pings.delete(message.t);
          this.rttMs = performance.now() - sent;
          this._emit("pong", { rttMs: this.rttMs });
        }
        break;
      }
      case "error":
        this._emit("error", { code: message.code, message: message.message });
        break;
      default:
        break;
    }
  }

  _applyFull(snapshot) {
    const players = new Map();
    for (const p of snapshot.players) players.set(p.id, { ...p, eid: null });
    this.players = players;
  }

  _applyDelta(snapshot) {
    // Enter, then update, then leave (docs/protocol.md). A delta this view cannot apply
    // (against a tick it does not hold, or updating a player it never entered) asks for
    // a complete snapshot ("resync"); deltas are dropped until it comes.
    if (snapshot.base === null) {
      this._byEid = new Map();
      this._resyncing = false;
    } else if (this._resyncing) {
      return;
    } else if (snapshot.base !== this._tick) {
      this._resync(`a delta against tick ${snapshot.base}, but the view is of ${this._tick}`);
      return;
    }
    const entered = new Set(snapshot.enter.map(([eid]) => eid));
    const unknown = snapshot.update.find(([eid]) => !entered.has(eid) && !this._byEid.has(eid));
    if (unknown) {
      this._resync(`an update of eid ${unknown[0]}, which the view does not hold`);
      return;
    }
    for (const [eid, id, name] of snapshot.enter) this._byEid.set(eid, { id, eid, name, x: 0, y: 0, seq: 0 });
    for (const [eid, x, y, seq] of snapshot.update) Object.assign(this._byEid.get(eid), { x, y, seq });
    for (const eid of snapshot.leave) this._byEid.delete(eid);
    this._tick = snapshot.tick;
    this.players = new Map([...this._byEid.values()].map((p) => [p.id, p]));
  }

  _resync(reason) {
    if (!this._resyncing) this._send({ type: "resync" });
    this._resyncing = true;
    this._emit("resync", { reason });
  }
}

// The HTTP API, for the pages around the world.
export async function api(baseUrl, path, { method = "GET", token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, baseUrl), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || { code: "http_error", message: response.statusText };
    const fields = error.fields ? " (" + Object.entries(error.fields).map(([f, why]) => `${f}: ${why}`).join(", ") + ")" : "";
    throw Object.assign(new Error(`${error.message}${fields}`), { code: error.code, status: response.status });
  }
  return data;
}
