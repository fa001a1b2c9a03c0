// outpost-client.js: the world of an Outpost server, for game clients in a browser
// (docs/client.md; the wire is docs/protocol.md). No dependencies but msgpack.js.
//
//   const client = new OutpostClient({ baseUrl: location.origin, token });
//   client.addEventListener("welcome", (e) => ...);   // e.detail: the welcome
//   client.addEventListener("snapshot", (e) => ...);  // e.detail: { zone, tick, players }
//   client.addEventListener("events", (e) => ...);    // e.detail: { zone, tick, events }
//   client.addEventListener("error", (e) => ...);     // e.detail: { code, message, seq }
//   client.addEventListener("reconnecting", (e) => ...); // e.detail: { attempt, delayMs, reason }
//   client.addEventListener("reconnected", (e) => ...);  // e.detail: { attempt, zone }
//   client.addEventListener("close", (e) => ...);     // e.detail: { code, reason, words } (final)
//   await client.connect();                           // offers v2, takes v1 otherwise
//   client.join(characterId);                         // joined again after a reconnect
//   client.move(dx, dy);                               // returns the seq it sent
//   client.fire("pistol", ax, ay, tick);               // or client.send("fire", {...})
//
// `players` in a snapshot is a Map of character id -> { id, eid, name, x, y, seq, ...fields }
// (the game's replicated fields, e.g. hp), the same whichever protocol the server chose:
// v2 deltas are applied here.

import { decode, encode } from "./msgpack.js";

export const SUBPROTOCOL = "outpost.v2";

// What a close code means, in words a player can read (docs/protocol.md).
export const CLOSE_WORDS = {
  1000: "The connection was closed.",
  1001: "The server is going away (a restart?).",
  1006: "The connection was lost.",
  1007: "The server could not read a compressed message.",
  1011: "The server met a fault of its own.",
  4001: "Your session has expired: log in again.",
  4008: "The server closed the connection: too many or too large messages, or no activity.",
  4009: "This character was taken over by another session.",
  4010: "An operator removed you from the game.",
  4011: "This account has been disabled.",
  4012: "This session has ended: log in again.",
};

// Closes after which trying again is worth it: the network or the server went away (or
// met a fault), not a decision about this player. Everything else is final: 1000 (we
// closed it), 4001 (a new token first: PageSession), 4008 (this client misbehaved: it
// would again), 4009 (another session has the character), 4010 (kicked), 4011 (account
// disabled), 4012 (the session ended: a logout).
const RETRIED = new Set([1001, 1006, 1011, 1012, 1013, 1014]);

export class OutpostClient extends EventTarget {
  constructor({ baseUrl, token, protocol = "auto", WebSocketImpl = WebSocket,
                reconnect = true, baseDelayMs = 500, maxDelayMs = 8000, maxAttempts = Infinity,
                unavailableMs = 10000, random = Math.random, fetchImpl = null }) {
    super();
    this.baseUrl = baseUrl;
    this.token = token;
    this.wanted = protocol;  // "auto" (v2 if offered), "v2" or "v1"
    this.WebSocketImpl = WebSocketImpl;
    // Reconnecting: exponential backoff with full jitter (a random delay between 0 and
    // min(maxDelayMs, baseDelayMs * 2^(attempt-1))), so that the players of a server
    // that restarts do not all come back in the same instant.
    this.options = { reconnect, baseDelayMs, maxDelayMs, maxAttempts, unavailableMs };
    this.random = random;
    this.fetchImpl = fetchImpl || ((...args) => fetch(...args));
    this.protocol = null;  // "v1" or "v2" once connected
    this.status = "idle";  // "connecting", "open", "reconnecting", "closed"
    this.seq = 0;  // never goes back, across sockets: every seq is greater than the last
    this.eid = null;
    this.zone = null;
    this.tick = null;  // the tick of the last snapshot
    this.fields = [];  // v2: the names of the replicated fields, from the welcome
    this.characterId = null;  // the character joined: joined again after a reconnect
    this.players = new Map();  // character id -> player (what the last snapshot showed)
    this.attempt = 0;  // reconnect attempts since the last welcome
    this._byEid = new Map();  // v2: eid -> player
    this._tick = null;  // v2: the tick of the last snapshot applied
    this._resyncing = false;  // v2: a complete snapshot was asked for; deltas wait for it
    this._pings = new Map();
    this._retry = null;  // the timer of the next reconnect
    this._unavailable = null;  // the timer that gives up waiting for a zone to come back
    this._stopped = false;  // close() was called: never reconnect
    this._closing = null;  // why we closed the socket ourselves to try a new one
    this.rttMs = null;
  }

  // Resolves with the protocol in use once a socket is open. A first socket refused
  // before it opened is tried again only when the server cannot be reached (and
  // `reconnect` is on); a refusal of the token rejects at once.
  connect() {
    this._stopped = false;
    return new Promise((resolve, reject) => {
      this._firstOpen = { resolve, reject };
      this._open();
    });
  }

  join(characterId) {
    this.characterId = characterId;
    this._send({ type: "join", character_id: characterId });
  }

  move(dx, dy) {
    return this.send("move", { dx, dy });
  }

  fire(weapon, ax, ay, tick) {
    return this.send("fire", { weapon, ax, ay, tick });
  }

  // Any input of the game (docs/rules.md, "Inputs"), numbered: returns its seq, which
  // snapshots acknowledge and a refusal (an `error` with `seq`) names.
  send(kind, values = {}) {
    this.seq += 1;
    this._send({ type: kind, ...values, seq: this.seq });
    return this.seq;
  }

  travel(zone) {
    this._send({ type: "travel", zone });
  }

  // A fresh access token of the same session (POST /v1/auth/refresh): the open socket
  // lives until it expires instead of closing with 4001, and a reconnect uses it.
  renew(token) {
    this.token = token;
    this._send({ type: "renew", token });
  }

  ping() {
    const t = Math.round(performance.now() * 1000);
    this._pings.set(t, performance.now());
    this._send({ type: "ping", t });
  }

  close() {
    this._stopped = true;
    clearTimeout(this._retry);
    clearTimeout(this._unavailable);
    this.status = "closed";
    if (this.socket && this.socket.readyState <= 1) this.socket.close(1000, "bye");
  }

  _open() {
    const url = new URL("/v1/world/ws", this.baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    const offered = this.wanted === "v1" ? [] : [SUBPROTOCOL];
    const socket = new this.WebSocketImpl(url.toString(), offered);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    let opened = false;
    this.status = this.attempt ? "reconnecting" : "connecting";
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      opened = true;
      this.status = "open";
      this.protocol = socket.protocol === SUBPROTOCOL ? "v2" : "v1";
      this._byEid = new Map();
      this._tick = null;
      this._resyncing = false;
      if (this.attempt && this.characterId) {
        this._send({ type: "join", character_id: this.characterId });
      }
      if (this._firstOpen) {
        this._firstOpen.resolve(this.protocol);
        this._firstOpen = null;
      }
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.socket) this._received(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (socket === this.socket) this._closed(event, opened);
    });
  }

  async _closed(event, opened) {
    clearTimeout(this._unavailable);
    const words = CLOSE_WORDS[event.code] || `The connection closed (${event.code}).`;
    const closed = { code: event.code, reason: event.reason, words };
    if (this._stopped || !this.options.reconnect) return this._final(closed);
    if (!opened) {
      // A browser tells a refused upgrade (401, 403, 429) from an unreachable server by
      // neither code nor reason: both are 1006. Ask the server over HTTP which it is.
      const why = await this._probe();
      if (this._stopped) return this._final(closed);
      if (why === "unauthenticated") {
        return this._final({ code: 4001, reason: "upgrade refused (401)", words: CLOSE_WORDS[4001] });
      }
      if (why === "refused") {
        return this._final({ code: event.code, reason: "upgrade refused",
                             words: "The server refused the connection (not allowed from this page, or too many connections)." });
      }
      return this._again(`${words} The server cannot be reached.`);
    }
    if (this._closing) {  // we closed it to try again (_waitForZone)
      const why = this._closing;
      this._closing = null;
      return this._again(why);
    }
    if (RETRIED.has(event.code)) return this._again(words);
    return this._final(closed);
  }

  // Why an upgrade failed: "unreachable" (no answer, or the server's own trouble),
  // "unauthenticated" (the token is refused), or "refused" (the server is there and takes
  // the token, so it refused the socket itself: an origin or a connection cap).
  async _probe() {
    try {
      const response = await this.fetchImpl(new URL("/v1/me", this.baseUrl), {
        headers: { Authorization: `Bearer ${this.token}` } });
      if (response.status === 401) return "unauthenticated";
      if (response.status >= 500) return "unreachable";
      return "refused";
    } catch {
      return "unreachable";
    }
  }

  _again(reason) {
    this.attempt += 1;
    if (this.attempt > this.options.maxAttempts) {
      return this._final({ code: 1006, reason: "gave up", words: `${reason} Gave up after ${this.options.maxAttempts} attempts.` });
    }
    const ceiling = Math.min(this.options.maxDelayMs,
                             this.options.baseDelayMs * 2 ** (this.attempt - 1));
    const delayMs = Math.round(this.random() * ceiling);
    this.status = "reconnecting";
    this._emit("reconnecting", { attempt: this.attempt, delayMs, reason });
    clearTimeout(this._retry);
    this._retry = setTimeout(() => { if (!this._stopped) this._open(); }, delayMs);
  }

  _final(closed) {
    this.status = "closed";
    clearTimeout(this._retry);
    this._emit("close", closed);
    if (this._firstOpen) {
      this._firstOpen.reject(new Error(closed.words));
      this._firstOpen = null;
    }
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
      case "welcome": {
        clearTimeout(this._unavailable);
        this.zone = message.zone;
        this.eid = message.eid ?? null;
        this.fields = message.fields || [];
        const attempt = this.attempt;
        this.attempt = 0;
        this._emit("welcome", message);
        if (attempt) this._emit("reconnected", { attempt, zone: message.zone });
        break;
      }
      case "snapshot":
        if (this.protocol === "v2") this._applyDelta(message);
        else this._applyFull(message);
        this.tick = message.tick;
        this._emit("snapshot", { zone: message.zone, tick: message.tick, players: this.players });
        break;
      case "events":
        this._emit("events", { zone: message.zone, tick: message.tick, events: message.events });
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
        if (message.code === "zone_unavailable" && this.characterId) this._waitForZone();
        this._emit("error", { code: message.code, message: message.message, seq: message.seq ?? null });
        break;
      default:
        break;
    }
  }

  // The server joins its players again by itself when their zone comes back; if it does
  // not within `unavailableMs`, a new socket (and join) is tried, with backoff.
  _waitForZone() {
    clearTimeout(this._unavailable);
    this._unavailable = setTimeout(() => {
      if (this._stopped || !this.socket || !this.options.reconnect) return;
      this._closing = "Your zone is still unavailable: trying a new connection.";
      this.socket.close(4000, "zone unavailable: trying again");
    }, this.options.unavailableMs);
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
    for (const [eid, x, y, seq, ...values] of snapshot.update) {
      const player = this._byEid.get(eid);
      Object.assign(player, { x, y, seq });
      // The game's fields follow seq, in the order the welcome named them.
      this.fields.forEach((name, i) => { if (i < values.length) player[name] = values[i]; });
    }
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

// A page's session (docs/client.md, "Sessions"): its access token and the refresh token
// that gets the next one, kept in `storage` under `key`. `token()` answers an access
// token with a minute or more to live, refreshing first when it has less (or when
// `renew`); one refresh at a time, since a refresh token works once and a second use
// ends the session. A refresh refused (401) ends it here too: log in again.
export class PageSession {
  constructor(baseUrl, key, storage = sessionStorage) {
    this.baseUrl = baseUrl;
    this.key = key;
    this.storage = storage;
    this.saved = JSON.parse(storage.getItem(key) || "null");
    this._refreshing = null;
  }

  get signedIn() { return this.saved !== null; }

  start(issued) {  // the answer of register, login or refresh
    this.saved = { token: issued.token, refresh: issued.refresh_token,
                   expiresAt: Date.now() + issued.expires_in * 1000 };
    this.storage.setItem(this.key, JSON.stringify(this.saved));
  }

  async token({ renew = false } = {}) {
    if (!this.saved) throw Object.assign(new Error("log in again"), { code: "unauthenticated", status: 401 });
    if (renew || Date.now() > this.saved.expiresAt - 60000) {
      this._refreshing ||= api(this.baseUrl, "/v1/auth/refresh", {
        method: "POST", body: { refresh_token: this.saved.refresh } })
        .then((issued) => this.start(issued))
        .catch((error) => { if (error.status === 401) this.end(); throw error; })
        .finally(() => { this._refreshing = null; });
      await this._refreshing;
    }
    return this.saved.token;
  }

  // Log out: the refresh token alone names the session (its access token may be stale).
  async logout() {
    const saved = this.saved;
    this.end();
    if (saved) {
      await api(this.baseUrl, "/v1/auth/logout", { method: "POST", body: { refresh_token: saved.refresh } })
        .catch(() => null);  // ended already, or the server away: nothing more to do here
    }
  }

  end() {
    this.saved = null;
    this.storage.removeItem(this.key);
  }
}
